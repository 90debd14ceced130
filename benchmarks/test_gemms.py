"""The fused TED-Adapter's six GEMMs side by side (issue 23), each through ours, cuBLAS and the persistent TMA
candidate at two tile sizes (:mod:`benchmarks.gemm_cases`). Device time replayed from a CUDA graph (the op runs
captured in training). ViT-B/16, B=8, T=8, bf16: rows ``suite="gemms"`` of the card's JSON."""
from __future__ import annotations

import pytest
import torch

from .gemm_cases import BACKENDS, GEMMS, operands
from .harness import HAS_CUDA, NO_CUDA_REASON, VIT_B16, graph_time_ms

pytestmark = pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA_REASON)
B, T = 8, 8


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("gemm", GEMMS)
def test_ted_gemm(benchmark, record, gemm, backend):
    o = operands(B * T * VIT_B16.L, VIT_B16.C, VIT_B16.Ca, VIT_B16.L)
    fn = BACKENDS[backend](o).get(gemm)
    if fn is None:
        pytest.skip(f"{backend} has no {gemm}")
    fn()  # autotune / compile outside the timing
    median_ms = graph_time_ms(fn)
    x, h = o["x"], o["h"]
    flops = 0.0 if gemm.startswith("split") else 2.0 * x.shape[0] * x.shape[1] * h.shape[1]
    row = dict(suite="gemms", op="ted_adapter", width=VIT_B16.name, B=B, T=T, dtype="bf16", gemm=gemm,
               provider=backend, median_ms=median_ms, flops=flops)
    benchmark.group = f"ted gemms {gemm}"
    benchmark.extra_info.update(row)
    benchmark.pedantic(lambda: (fn(), torch.cuda.synchronize()), rounds=5, warmup_rounds=1)
    record(row)
