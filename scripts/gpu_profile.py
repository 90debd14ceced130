"""Where the GPU time goes, on the GPU machine: ``PYTHONPATH=$PWD python3 scripts/gpu_profile.py [ted] [train]
[--into benchmarks/results/<card>.json]``.

``ted``: the TED-Adapter target row (ViT-B/16, B=8, T=8, bf16, fwd+bwd). First a parity check of the steady
state (the launch after the first, which goes through :mod:`kernels.launcher`'s remembered signatures)
against the fp64 reference; then per provider:

- ``do_bench``: the benchmark's own number (device time between events, L2 flushed; it includes host gaps
  when the host cannot keep the GPU busy);
- ``kernels``: the sum of the kernels' device time per step (``torch.profiler``), the GPU's own work;
- ``host``: wall time per step of a loop that never waits for the GPU (what issuing the work costs).

``train``: one training step (vit-b16-k400, B=8, bf16 autocast) with fused and eager adapters, the same three
figures and the ops that take the most host time.

``breakdown``: the fused B=32 step's time by component (:mod:`benchmarks.breakdown`), stored with ``--into`` as
the card's ``profile.train_breakdown``.

``ncu``: one warmed-up fused fwd+bwd of the target row inside the NVTX range ``profile``, for Nsight Compute.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Callable

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from benchmarks.breakdown import profile_step
from benchmarks.harness import VIT_B16, device_time_ms
from benchmarks.cases import op_cases, provider_fn, runner, train_step
from benchmarks.harness import rel_err

STEPS = 20


def steady_state_parity(case) -> None:
    """The fused op's second call on fresh inputs (remembered launches) against fp64 on the same inputs."""
    import kernels

    fused = provider_fn(case, "ted_adapter", "fused")
    fused(*case.make(torch.bfloat16)).sum().backward()  # first call: through Triton
    inputs = [t.detach().requires_grad_() for t in case.make(torch.bfloat16)]
    out = fused(*inputs)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    ref = case.eager(*ref_inputs)
    ref.backward(grad.double())
    errors = [rel_err(out, ref)] + [rel_err(a.grad, b.grad) for a, b in zip(inputs, ref_inputs)]
    ok = max(errors) < 2e-2  # docs/DESIGN.md §3, bf16
    print(f"steady-state parity, bf16 vs fp64, {sum(kernels.launch_counts.values())} launches: worst relative error "
          f"{max(errors):.2e} over value and {len(errors) - 1} gradients -> {'ok' if ok else 'FAILED'}")


def measure(name: str, run: Callable[[], None], rows: int = 14) -> dict:
    """Print and return ``do_bench``, device and host time per step and the kernels' mean device time."""
    for _ in range(3):
        run()
    torch.cuda.synchronize()
    bench_ms = device_time_ms(run)
    start = time.perf_counter()
    for _ in range(STEPS):
        run()
    host_ms = (time.perf_counter() - start) / STEPS * 1e3
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(STEPS):
            run()
        torch.cuda.synchronize()
    averages = prof.key_averages()
    kernels = [a for a in averages if a.device_type == DeviceType.CUDA]  # device events, not the ops launching them
    kernel_ms = sum(a.self_device_time_total for a in kernels) / STEPS / 1e3
    launches = sum(a.count for a in kernels) / STEPS
    print(f"\n== {name}: do_bench {bench_ms:.3f} ms | kernels {kernel_ms:.3f} ms in {launches:.0f} launches "
          f"| host {host_ms:.3f} ms per step (no waits)", flush=True)
    print(averages.table(sort_by="self_device_time_total", row_limit=rows, max_name_column_width=60))
    print(averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60), flush=True)
    per_kernel = {}
    for a in kernels:  # Triton's "_gemm_kernel" -> "gemm", as the static model names them
        short = a.key.strip("_").removesuffix("_kernel")
        per_step = a.count / STEPS
        label = short if per_step <= 1 else f"{short} ({per_step:.0f}, mean)"
        per_kernel[label] = round(a.self_device_time_total / a.count, 2)
    return dict(do_bench_us=round(bench_ms * 1e3), device_us=round(kernel_ms * 1e3), host_us=round(host_ms * 1e3),
                launches=round(launches), kernels_us=per_kernel)


def ted(into: str | None = None) -> None:
    """The target row; with ``into`` (a card's results JSON) the figures are stored there as its ``profile``,
    which ``benchmarks.report`` sets beside the static model's prediction kernel by kernel."""
    torch.manual_seed(0)
    case = op_cases(VIT_B16, 8, 8)["ted_adapter"]
    steady_state_parity(case)
    profile = {"shape": "ted_adapter ViT-B/16 B=8 T=8 bf16 fwd+bwd", "call": "this run"}
    for provider in ("fused", "eager"):
        profile[provider] = measure(f"ted_adapter {provider}", runner(
            provider_fn(case, "ted_adapter", provider), lambda: case.make(torch.bfloat16), "fwdbwd", 2))
    if into and os.path.exists(into):
        with open(into) as f:
            result = json.load(f)
        result["profile"] = profile
        with open(into, "w") as f:
            json.dump(result, f, indent=1)
        print(f"profile stored in {into}")


def ncu_target() -> None:
    """The fused target row, warmed up (autotuned, launches learnt), then one fwd+bwd inside the NVTX range
    ``profile`` — for Nsight Compute: ``ncu --nvtx --nvtx-include "profile/" ... gpu_profile.py ncu``."""
    torch.manual_seed(0)
    case = op_cases(VIT_B16, 8, 8)["ted_adapter"]
    run = runner(provider_fn(case, "ted_adapter", "fused"), lambda: case.make(torch.bfloat16), "fwdbwd", 2)
    for _ in range(3):
        run()
    torch.cuda.synchronize()
    with torch.cuda.nvtx.range("profile"):
        run()
    torch.cuda.synchronize()


def train(batch: int = 8) -> None:
    for provider in ("fused", "eager"):
        step = train_step("vit-b16-k400", batch, provider, "cuda").step
        measure(f"train step B={batch} {provider}", step, rows=20)


def breakdown(into: str | None = None, batch: int = 32) -> None:
    """Where the fused training step's time goes at ``batch``, by component (:mod:`benchmarks.breakdown`);
    stored in ``into``'s ``profile.train_breakdown``."""
    case = train_step("vit-b16-k400", batch, "fused", "cuda")
    for _ in range(3):
        case.step()
    parts = {k: round(v, 3) for k, v in profile_step(case.step, case.model).items()}
    print(f"\n== train step B={batch} fused, ms a step by component:")
    for name, ms in parts.items():
        print(f"  {name:45s} {ms:8.3f}")
    if into and os.path.exists(into):
        with open(into) as f:
            result = json.load(f)
        result.setdefault("profile", {})["train_breakdown"] = dict(shape=f"vit-b16-k400 B={batch} fused", ms=parts)
        with open(into, "w") as f:
            json.dump(result, f, indent=1)
        print(f"breakdown stored in {into}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="*", choices=["ted", "train", "breakdown", "ncu"], default=["ted", "train"])
    parser.add_argument("--into", help="a card's results JSON to store the TED-Adapter profile in")
    args = parser.parse_args()
    for what in args.what:
        {"ted": lambda: ted(args.into), "train": train, "breakdown": lambda: breakdown(args.into),
         "ncu": ncu_target}[what]()
