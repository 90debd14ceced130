"""Host time: one fwd+bwd fused (through our launcher and through Triton's dispatch) and eager on a stand-in
sm_90 driver, the cost of registering an op, and that our launches pass the driver what Triton's do."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from ..dispatch import compare_launches, fake_h100
from .workloads import TINY, Shape, quick_gelu_fwd_bwd, ted_fwd_bwd, temporal_adapter_fwd_bwd, text_fwd_bwd


def host_us(fn: Callable[[], None], repeats: int = 60) -> float:
    """Median microseconds of ``fn`` (after a warm-up)."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def host_fused_vs_eager(s: Shape = TINY, rounds: int = 7, repeats: int = 30) -> dict:
    """Host microseconds of one TED fwd+bwd: fused, through our launcher and through Triton's own dispatch
    (real dispatch up to the driver call, :mod:`benchmarks.dispatch`), and eager, measured in alternating
    rounds so that all see the same machine load; each the lowest round median (what the code costs; other
    load on the machine only ever adds)."""
    import kernels
    from kernels import reference
    from kernels.launcher import launch_compiled
    from kernels.runtime import capture_launches

    def ours(name, kernel, grid, args, meta):
        launch_compiled(kernel, grid, args, meta)

    def through_triton(name, kernel, grid, args, meta):
        kernel[grid](*args, **meta)

    fused_run, eager_run = ted_fwd_bwd(kernels, s), ted_fwd_bwd(reference, s)
    times: dict[str, list[float]] = {"fused_us": [], "fused_triton_dispatch_us": [], "eager_us": []}
    with fake_h100():
        for _ in range(rounds):
            for key, hook in (("fused_us", ours), ("fused_triton_dispatch_us", through_triton)):
                with capture_launches(hook):
                    times[key].append(host_us(fused_run, repeats))
            times["eager_us"].append(host_us(eager_run, repeats))
    return {key: min(values) for key, values in times.items()}


def fast_launches_match_triton() -> dict:
    """Every launch of the fused ops (fp32 and bf16, small shapes), made through Triton and through our
    launcher: the driver must receive the same kernel, grid, stream and arguments."""
    import kernels

    bf16 = Shape(B=1, T=2, grid=(2, 2), C=16, Ca=8, dtype=torch.bfloat16)
    runs = [make(kernels, shape) for make in (ted_fwd_bwd, text_fwd_bwd, temporal_adapter_fwd_bwd,
                                              quick_gelu_fwd_bwd) for shape in (TINY, bf16)]
    with fake_h100() as fake:
        results = [compare_launches(fake, fn) for fn in runs]
    return dict(launches=sum(r["launches"] for r in results), differing=sum((r["differing"] for r in results), []))


def registration_host_us(repeats: int = 200) -> dict:
    """Host microseconds of a trivial op's forward+backward registered three ways."""
    lib_ns = "m2clip_static_probe"

    @torch.library.custom_op(f"{lib_ns}::scale", mutates_args=())
    def scale(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    scale.register_fake(lambda x: torch.empty_like(x))
    scale.register_autograd(lambda ctx, g: g, setup_context=lambda ctx, inputs, output: None)

    class Scale(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g

    x = torch.randn(4, requires_grad=True)
    return {"custom_op": host_us(lambda: scale(x).sum().backward(), repeats),
            "autograd.Function": host_us(lambda: Scale.apply(x).sum().backward(), repeats),
            "plain aten (clone)": host_us(lambda: x.clone().sum().backward(), repeats)}
