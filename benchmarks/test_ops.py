"""Per-op benchmarks: fused vs eager vs torch.compile (default; max-autotune); fwd, bwd, fwd+bwd; and fused vs
eager replayed from CUDA graphs (``-graph``: device time alone). The cases are :mod:`benchmarks.cases`."""
from __future__ import annotations

import pytest
import torch

from .cases import GRAPH_PROVIDERS, PROVIDERS, op_cases, op_grid, provider_fn, runner
from .harness import DTYPES, HAS_CUDA, NO_CUDA_REASON, copies_for, device_time_ms, graph_time_ms, roofline

pytestmark = pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA_REASON)


@pytest.mark.parametrize("passes", ["fwd", "bwd", "fwdbwd"])
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("provider", PROVIDERS + [p for p in GRAPH_PROVIDERS if p])
@pytest.mark.parametrize("op, width, B, T", list(op_grid()), ids=lambda v: getattr(v, "name", str(v)))
def test_op(benchmark, record, hardware, op, width, B, T, provider, dtype, passes):
    torch.manual_seed(0)
    case = op_cases(width, B, T)[op]
    fn = provider_fn(case, op, provider)
    dt = DTYPES[dtype]
    probe = case.make(dt)
    set_bytes = sum(t.numel() * t.element_size() for t in probe)
    try:
        run = runner(fn, lambda: case.make(dt), passes, copies_for(set_bytes))
        run()  # compile / autotune outside the timing
        median_ms = graph_time_ms(run) if provider.endswith("-graph") else device_time_ms(run)
    except torch.cuda.OutOfMemoryError:
        pytest.skip(f"{op} {width.name} B={B} T={T} {dtype} {provider}: out of memory")
    except RuntimeError as err:  # a pass that cannot be captured in a CUDA graph: say so, do not time it
        if not provider.endswith("-graph"):
            raise
        pytest.skip(f"{op} {width.name} B={B} T={T} {dtype} {passes}: not capturable in a CUDA graph ({err})")
    fwd_bytes, fwd_flops, bwd_bytes, bwd_flops = case.cost(torch.finfo(dt).bits // 8)
    nbytes = {"fwd": fwd_bytes, "bwd": bwd_bytes, "fwdbwd": fwd_bytes + bwd_bytes}[passes]
    flops = {"fwd": fwd_flops, "bwd": bwd_flops, "fwdbwd": fwd_flops + bwd_flops}[passes]
    row = roofline(dict(suite="ops", op=op, width=width.name, B=B, T=T, dtype=dtype, provider=provider,
                        passes=passes, median_ms=median_ms, bytes=nbytes, flops=flops), hardware)
    benchmark.group = f"{op} {width.name} B={B} T={T} {dtype} {passes}"
    benchmark.extra_info.update(row)

    def synced():
        run()
        torch.cuda.synchronize()

    benchmark.pedantic(synced, rounds=10, warmup_rounds=2)
    record(row)
