"""Per-op benchmarks: fused vs eager vs torch.compile (default; max-autotune); fwd, bwd, fwd+bwd; and fused vs
eager replayed from CUDA graphs (``-graph``: device time alone).

Bytes are the compulsory traffic (every input read once, every output written once); FLOPs are
counted analytically (GEMMs 2·M·N·K; depthwise taps 2 per tap).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from .harness import DTYPES, HAS_CUDA, NO_CUDA_REASON, VIT_B16, VIT_L14, Width, copies_for, device_time_ms
from .harness import graph_time_ms, roofline, rotating

pytestmark = pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA_REASON)

PROVIDERS = os.environ.get("M2CLIP_BENCH_PROVIDERS", "fused,eager,compile,compile-max").split(",")
# The same ops replayed from CUDA graphs: device time alone, where launching no longer counts.
GRAPH_PROVIDERS = os.environ.get("M2CLIP_BENCH_GRAPH_PROVIDERS", "fused-graph,eager-graph").split(",")
QUICK = os.environ.get("M2CLIP_BENCH_QUICK", "0") == "1"  # trims the grid to fit a short GPU lease
DEVICE = "cuda"  # a module constant so the harness can be dry-run elsewhere
# torch.compile modes. compile-max autotunes its kernels like max-autotune, but without CUDA graphs: every
# provider is timed under the same launch conditions (graphs would help all of them alike), and graph
# replays would overwrite outputs that the rotated backward inputs still hold.
COMPILE_MODES = {"compile": None, "compile-max": "max-autotune-no-cudagraphs"}


@dataclass(frozen=True)
class OpCase:
    """make(width, B, T, dtype) -> inputs (all differentiable); fused/eager take them positionally.
    cost(width, B, T, elem_bytes) -> (fwd bytes, fwd flops, bwd bytes, bwd flops)."""

    make: Callable
    fused: Callable
    eager: Callable
    cost: Callable


def _param(*shape, dtype, scale=0.02):
    return (torch.randn(*shape, device=DEVICE) * scale).to(dtype).requires_grad_()


def _branch(width, ca, kernel, dtype):
    """One bottleneck branch laid out as the adapter modules store it (depthwise weight tap-major)."""
    from kernels.packing import tap_major

    conv = tap_major(_param(ca, 1, *kernel, dtype=dtype, scale=0.3).detach()).requires_grad_()
    return [_param(ca, width, dtype=dtype), _param(ca, dtype=dtype), conv,
            _param(ca, dtype=dtype), _param(width, ca, dtype=dtype), _param(width, dtype=dtype)]


def _ted_inputs(x, C, Ca, dtype):
    """x and both branches, the fc weights of the two branches packed back to back as ``TEDAdapter`` does."""
    from kernels.packing import pack_pairs

    te, td = _branch(C, Ca, (3,), dtype), _branch(C, Ca, (3, 3), dtype)
    pack_pairs([(te[0], td[0]), (te[4], td[4])])
    return [x, *te, *td]


def _ted(impl, w: Width, T):
    from kernels import BranchWeights

    return lambda x, *p: impl.ted_adapter(x, T, w.grid, BranchWeights(*p[:6]), BranchWeights(*p[6:]))


def _ops(w: Width, B: int, T: int) -> dict[str, OpCase]:
    import kernels
    from kernels import BranchWeights, reference

    R, C, Ca, D = B * T * w.L, w.C, w.Ca, w.D
    N = B * T * (w.L - 1)
    S = 16  # text tokens per prompt

    def x(rows_shape, dtype):
        return torch.randn(*rows_shape, device=DEVICE).to(dtype).requires_grad_()

    gemm_pair = lambda rows, c, ca, e: (2 * rows * c * e, 4 * rows * c * ca, 3 * rows * c * e, 8 * rows * c * ca)  # noqa: E731
    return {
        "ted_adapter": OpCase(
            lambda dt: _ted_inputs(x((B * T, w.L, C), dt), C, Ca, dt),
            _ted(kernels, w, T), _ted(reference, w, T),
            lambda e: (2 * R * C * e, 8 * R * C * Ca + 26 * R * Ca, 3 * R * C * e, 16 * R * C * Ca + 52 * R * Ca)),
        "temporal_adapter": OpCase(
            lambda dt: [x((B * T, D), dt), *_branch(D, D // 2, (3,), dt)],
            lambda f, *p: kernels.temporal_adapter(f, T, BranchWeights(*p)),
            lambda f, *p: reference.temporal_adapter(f, T, BranchWeights(*p)),
            lambda e: gemm_pair(B * T, D, D // 2, e)),
        "text_adapter": OpCase(
            lambda dt: [x((B, S, D), dt), _param(Ca, D, dtype=dt), _param(Ca, dtype=dt), _param(D, Ca, dtype=dt),
                        _param(D, dtype=dt)],
            kernels.text_adapter, reference.text_adapter, lambda e: gemm_pair(B * S, D, Ca, e)),
        "temporal_conv": OpCase(
            lambda dt: [x((B * T, w.L, Ca), dt), _param(Ca, 1, 3, dtype=dt), _param(Ca, dtype=dt)],
            lambda a, wt, b: kernels.temporal_conv(a, T, wt, b), lambda a, wt, b: reference.temporal_conv(a, T, wt, b),
            lambda e: (2 * R * Ca * e, 6 * R * Ca, 3 * R * Ca * e, 12 * R * Ca)),
        "temporal_difference": OpCase(
            lambda dt: [x((B * T, w.L - 1, Ca), dt)],
            lambda a: kernels.temporal_difference(a, T), lambda a: reference.temporal_difference(a, T),
            lambda e: (2 * N * Ca * e, N * Ca, 2 * N * Ca * e, N * Ca)),
        "spatial_conv": OpCase(
            lambda dt: [x((B * T, w.L - 1, Ca), dt), _param(Ca, 1, 3, 3, dtype=dt), _param(Ca, dtype=dt)],
            lambda a, wt, b: kernels.spatial_conv(a, w.grid, wt, b), lambda a, wt, b: reference.spatial_conv(a, w.grid, wt, b),
            lambda e: (2 * N * Ca * e, 18 * N * Ca, 3 * N * Ca * e, 36 * N * Ca)),
        "quick_gelu": OpCase(  # the frozen vision MLP's activation, [B*T, L, 4C]
            lambda dt: [x((B * T, w.L, 4 * C), dt)], kernels.quick_gelu, reference.quick_gelu,
            lambda e: (2 * R * 4 * C * e, 4 * R * 4 * C, 3 * R * 4 * C * e, 8 * R * 4 * C)),
        "linear_gelu": OpCase(
            lambda dt: [x((R, C), dt), _param(2 * Ca, C, dtype=dt), _param(2 * Ca, dtype=dt)],
            lambda a, wt, b: kernels.linear(a, wt, b, "gelu"),
            lambda a, wt, b: torch.nn.functional.gelu(torch.nn.functional.linear(a, wt, b)),
            lambda e: ((R * C + R * 2 * Ca) * e, 2 * R * C * 2 * Ca, (2 * R * 2 * Ca + R * C) * e, 4 * R * C * 2 * Ca)),
    }


def _grid():
    """(op, width, B, T): the TED-Adapter over the whole grid, the other ops at B=8, T=8."""
    widths = [VIT_B16] if QUICK else [VIT_B16, VIT_L14]
    for w in widths:
        for T in ([8] if QUICK else [8, 16]):
            for B in ([8] if QUICK else [1, 8, 32]):
                yield "ted_adapter", w, B, T
        for op in ("temporal_adapter", "text_adapter", "temporal_conv", "temporal_difference", "spatial_conv",
                   "linear_gelu", "quick_gelu"):
            yield op, w, 8, 8


_COMPILED: dict = {}


def _provider_fn(case: OpCase, op: str, provider: str) -> Callable:
    provider = provider.removesuffix("-graph")  # the same function; only the timing differs
    if provider == "fused":
        return case.fused
    if provider == "eager":
        return case.eager
    key = (op, provider)
    if key not in _COMPILED:
        mode = COMPILE_MODES[provider]
        _COMPILED[key] = torch.compile(case.eager, mode=mode, dynamic=False)
    return _COMPILED[key]


def _runner(fn: Callable, make: Callable, passes: str, copies: int) -> Callable[[], None]:
    """The timed callable for one pass: forward; backward through stored graphs; or both. Inputs rotate
    over ``copies`` independently made sets."""
    if passes == "bwd":
        def graph():
            inputs = make()
            out = fn(*inputs)
            return inputs, out, torch.randn_like(out)

        graphs = rotating(graph, copies)

        def run_bwd():
            inputs, out, grad = graphs()
            torch.autograd.grad(out, inputs, grad, retain_graph=True)

        return run_bwd
    sets = rotating(make, copies)
    if passes == "fwd":
        return lambda: fn(*sets())
    grad = torch.randn_like(fn(*sets()))

    def run_fwdbwd():
        inputs = sets()
        torch.autograd.grad(fn(*inputs), inputs, grad)

    return run_fwdbwd


@pytest.mark.parametrize("passes", ["fwd", "bwd", "fwdbwd"])
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("provider", PROVIDERS + [p for p in GRAPH_PROVIDERS if p])
@pytest.mark.parametrize("op, width, B, T", list(_grid()), ids=lambda v: getattr(v, "name", str(v)))
def test_op(benchmark, record, hardware, op, width, B, T, provider, dtype, passes):
    torch.manual_seed(0)
    case = _ops(width, B, T)[op]
    fn = _provider_fn(case, op, provider)
    dt = DTYPES[dtype]
    probe = case.make(dt)
    set_bytes = sum(t.numel() * t.element_size() for t in probe)
    try:
        run = _runner(fn, lambda: case.make(dt), passes, copies_for(set_bytes))
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
