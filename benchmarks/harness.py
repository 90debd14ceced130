"""Timing, hardware ceilings and result rows shared by the benchmarks.

GPU rows are timed in device time (``triton.testing.do_bench``: warm-up excluded, L2 flushed between
runs, median) with the inputs rotated over several copies so that caches do not flatter; pytest-benchmark's
wall time is recorded alongside. Roofline: ``floor = max(bytes / BW, flops / peak)`` with BW (a large
device-to-device copy) and peak (a large matmul) measured on the same card in the same run.
"""
from __future__ import annotations

import datetime
import gc
import itertools
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import triton

# Where the suite writes <card>.json: the committed results folder, or M2CLIP_BENCH_RESULTS (a scratch
# folder: CI's runs must not rewrite tracked files; the GPU script writes straight into $OUT).
RESULTS_DIR = os.environ.get("M2CLIP_BENCH_RESULTS") or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                      "results")
HAS_CUDA = torch.cuda.is_available()
NO_CUDA_REASON = "GPU benchmark: no CUDA device on this machine (the fused ops are not timed under the interpreter)"
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖a − b‖ / ‖b‖`` in fp64 (on ``a``'s and ``b``'s devices): the one error measure of the parity checks
    (tests, profiles; docs/DESIGN.md §3)."""
    b = b.double()
    return ((a.double() - b).norm() / b.norm().clamp_min(1e-30)).item()


@dataclass(frozen=True)
class Width:
    """A CLIP ViT's widths: image tower C, TED bottleneck Ca, patch grid, joint/text width D."""

    name: str
    C: int
    Ca: int
    grid: tuple[int, int]
    D: int

    @property
    def L(self) -> int:
        return 1 + self.grid[0] * self.grid[1]


VIT_B16 = Width("ViT-B/16", 768, 384, (14, 14), 512)
VIT_L14 = Width("ViT-L/14", 1024, 384, (16, 16), 768)


def card_name() -> str:
    if HAS_CUDA:
        return torch.cuda.get_device_name()
    return f"cpu-{platform.machine()}-{os.cpu_count()}core"


def results_path() -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in card_name())
    return os.path.join(RESULTS_DIR, f"{safe}.json")


def rotating(make: Callable[[], tuple], copies: int) -> Callable[[], tuple]:
    """A callable returning the next of ``copies`` independently made input sets."""
    cycle = itertools.cycle([make() for _ in range(copies)])
    return lambda: next(cycle)


def copies_for(bytes_per_set: int, l2_bytes: int = 64 << 20) -> int:
    """Enough input copies to overflow L2 (64 MiB covers H100/H200's 50 MiB), at most 16."""
    return max(2, min(16, -(-2 * l2_bytes // max(bytes_per_set, 1))))


def device_time_ms(fn: Callable[[], object]) -> float:
    """Median device time of ``fn`` in ms (CUDA), warm-up and compilation excluded."""
    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def graph_time_ms(fn: Callable[[], object]) -> float:
    """Median device time of ``fn`` in ms replayed from a CUDA graph (``triton.testing.do_bench_cudagraph``):
    no host time at all, what a graph-captured training step would see (L2 is not flushed between calls)."""
    return float(triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median"))


def time_calls(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    """(median ms a call, median host ms to issue one) over ``calls`` calls of a whole step or batch: CUDA events
    around each (on CPU the wall clock)."""
    sync = torch.cuda.synchronize if HAS_CUDA else (lambda: None)
    device_ms, host_ms = [], []
    for _ in range(calls):
        sync()
        if HAS_CUDA:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        fn()
        host_ms.append((time.perf_counter() - t0) * 1e3)
        if HAS_CUDA:
            end.record()
            end.synchronize()
            device_ms.append(start.elapsed_time(end))
        else:
            device_ms.append(host_ms[-1])
    return statistics.median(device_ms), statistics.median(host_ms)


class RowMemory:
    """A benchmark row's own peak GPU memory: from before its model exists (earlier rows' leftovers collected
    and not counted) to :meth:`peak_gb`, warm-up, compilation and CUDA-graph capture included. None on CPU."""

    def __init__(self) -> None:
        if HAS_CUDA:
            gc.collect()
            torch.cuda.empty_cache()
            self.before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()

    def peak_gb(self) -> Optional[float]:
        return (torch.cuda.max_memory_allocated() - self.before) / 1e9 if HAS_CUDA else None


def measure_bandwidth_gbs(nbytes: int = 1 << 30) -> float:
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    ms = device_time_ms(lambda: dst.copy_(src))
    return 2 * nbytes / (ms * 1e-3) / 1e9


def measure_peak_tflops(dtype: torch.dtype, n: int = 8192) -> float:
    """A large matmul's TFLOP/s; fp32 with TF32 where PyTorch allows it (the benchmarks allow it)."""
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    ms = device_time_ms(lambda: a @ b)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def settings() -> dict:
    """What shaped this run: grid trimming, providers, time budget, fp32 matmul precision."""
    from kernels.dtypes import fp32_dot_precision

    env = {k[len("M2CLIP_BENCH_"):].lower(): v for k, v in os.environ.items() if k.startswith("M2CLIP_BENCH_")}
    return {**env, "fp32_matmul": fp32_dot_precision() if HAS_CUDA else None}


def roofline(row: dict, hw: dict) -> dict:
    """Add achieved GB/s, TFLOP/s, the roofline floor and the fraction of it reached to ``row``."""
    seconds = row["median_ms"] * 1e-3
    peak = hw["peak_tflops"][row["dtype"]]
    floor_ms = max(row["bytes"] / (hw["bandwidth_gbs"] * 1e9), row["flops"] / (peak * 1e12)) * 1e3
    return {
        **row,
        "gbs": row["bytes"] / seconds / 1e9,
        "tflops": row["flops"] / seconds / 1e12,
        "floor_ms": floor_ms,
        "fraction_of_floor": floor_ms / row["median_ms"],
    }


def write_results(rows: Sequence[dict], hardware: Optional[dict], kept: Optional[dict] = None) -> str:
    """Write this run's rows to ``benchmarks/results/<card>.json`` (with ``kept``: a continued run's other
    entries, its profile and call log); returns the path."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = results_path()
    payload = {
        **(kept or {}),
        "card": card_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda if HAS_CUDA else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hardware": hardware,
        "settings": settings(),
        "rows": list(rows),
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    return path
