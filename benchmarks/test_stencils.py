"""The TED-Adapter's backward stencil in launch variants (issue 23), timed alone at ViT-B/16, B=8, T=8, bf16,
replayed from CUDA graphs: rows ``suite="stencils"`` of the card's JSON.

The H200 measured it at 84.9 µs where the static model predicted 33.0 (docs/DESIGN.md §4): latency-bound, two
programs (16 warps) an SM, four dependent memory rounds a frame. These variants trade registers for programs
resident; compiled for sm_90 with Triton 3.8 (``benchmarks/static``), predicted for the H100 by the model that
counts those rounds (61.8 µs for today's, against the 84.9 measured):

| warps, register cap | registers | spilled bytes | programs an SM | predicted µs |
|---|---|---|---|---|
| 8, 128 (today) | 128 | 0 | 2 | 61.8 |
| 8, 80 | 80 | 216 | 3 | 40.0 |
| 4, 128 | 128 | 312 | 4 | 40.0 |
| 16, 128 | 112 | 0 | 1 | 44.6 |

The model does not charge spills (their local-memory traffic in the frame loop), which the two fastest predicted
carry; the measurement decides ``kernels.primitives.stencil.BWD_WARPS`` / ``BWD_MAX_REGISTERS``."""
from __future__ import annotations

from typing import Callable, NamedTuple
from unittest import mock

import pytest
import torch

from .harness import HAS_CUDA, NO_CUDA_REASON, VIT_B16, graph_time_ms

pytestmark = pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA_REASON)
B, T = 8, 8
VARIANTS = {"8 warps, 128 registers": (8, 128), "8 warps, 80 registers": (8, 80),
            "4 warps, 128 registers": (4, 128), "16 warps, 128 registers": (16, 128)}


class StencilCase(NamedTuple):
    run: Callable[[], torch.Tensor]  # the launch -> dz [R, 2ca]
    dh: torch.Tensor  # [R, 2ca]: the TE part's ca channels, then the TD part's
    te_weight: torch.Tensor  # [ca, 1, 3]


def stencil_backward_case(batch: int, frames: int, grid: tuple[int, int], ca: int, device: str,
                          dtype: torch.dtype = torch.bfloat16) -> StencilCase:
    """One TED-Adapter backward stencil launch as the op makes it (both parts, ``ca`` channels each)."""
    from kernels.packing import dense_taps
    from kernels.primitives.stencil import (TD_TAPS, TE_TAPS, StencilPart, partial_width, stencil_backward,
                                            stencil_programs)

    tokens = 1 + grid[0] * grid[1]
    rows = batch * frames * tokens
    z, dh = (torch.randn(rows, 2 * ca, device=device, dtype=dtype) for _ in range(2))
    te = StencilPart(torch.randn(ca, device=device), dense_taps(torch.randn(ca, 1, 3, device=device)))
    td = StencilPart(torch.randn(ca, device=device), dense_taps(torch.randn(ca, 1, 3, 3, device=device)))
    programs = stencil_programs(rows // frames)
    te_part = torch.empty(programs, partial_width(ca, TE_TAPS), device=device)
    td_part = torch.empty(programs, partial_width(ca, TD_TAPS), device=device)
    return StencilCase(lambda: stencil_backward(dh, z, frames, tokens, grid, ca, te, td, te_part, td_part), dh,
                       te.weight)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stencil_bwd_variant(benchmark, record, variant):
    from kernels.primitives import stencil

    warps, registers = VARIANTS[variant]
    run = stencil_backward_case(B, T, (14, 14), VIT_B16.Ca, "cuda").run
    with mock.patch.object(stencil, "BWD_WARPS", warps), mock.patch.object(stencil, "BWD_MAX_REGISTERS", registers):
        run()  # compiled outside the timing
        median_ms = graph_time_ms(run)
        row = dict(suite="stencils", op="ted_adapter", width=VIT_B16.name, B=B, T=T, dtype="bf16",
                   kernel="stencil_bwd", provider=variant, median_ms=median_ms)
        benchmark.group = "stencil_bwd variants"
        benchmark.extra_info.update(row)
        benchmark.pedantic(lambda: (run(), torch.cuda.synchronize()), rounds=5, warmup_rounds=1)
    record(row)
