"""Evaluation throughput (issue 21: ≥ 95 videos/s at 4×3 views on one card): a loader batch of videos, every view
of each, scored from decoded clips already in memory (``cases.eval_batch``: ``engine.view_probabilities`` as
``engine.evaluate`` runs it) for every provider of ``cases.EVAL_PROVIDERS``. Each row: videos/s, the batch's time
(CUDA events, the median of ``BATCHES``), host time to issue it, the row's peak memory, FLOPs counted on fake
tensors (``benchmarks.step_trace``) and MFU against the bf16 peak measured in the same run.

On CPU: the ``tiny`` preset, eager only, 2 views (the interpreter is not a speed)."""
from __future__ import annotations

import functools

import pytest
import torch

from .cases import EVAL_PROVIDERS, eval_batch
from .harness import HAS_CUDA, RowMemory, time_calls

VIDEOS = 8  # a loader batch: the trainer's batch size a GPU
BATCHES = 10  # timed batches a row
if HAS_CUDA:
    CASES = [("vit-b16-k400", 12, p) for p in EVAL_PROVIDERS]  # 4 spatial crops × 3 temporal clips
else:
    CASES = [("tiny", 2, "eager")]


@functools.lru_cache(maxsize=None)
def clip_flops(preset: str) -> float:
    """FLOPs of one clip's evaluation forward, counted on fake tensors (the same work for every provider)."""
    from .step_trace import trace_step

    return trace_step("eager", preset, 1, train=False)["flops"]


@pytest.mark.parametrize("preset, views, provider", CASES)
def test_eval(benchmark, record, request, preset, views, provider):
    device = "cuda" if HAS_CUDA else "cpu"
    hardware = request.getfixturevalue("hardware") if HAS_CUDA else None
    memory = RowMemory()
    case = eval_batch(preset, VIDEOS, views, provider, device)
    for _ in range(3):  # compilation, autotuning, the graph's warm-up and capture
        case.score()
    median_ms, host_ms = time_calls(case.score, BATCHES)
    peak = memory.peak_gb()
    flops = clip_flops(preset) * case.clips
    tflops = flops / (median_ms * 1e-3) / 1e12
    row = dict(suite="eval", op="m2clip_eval", width=preset, B=VIDEOS, views=views, T=8,
               dtype="bf16" if HAS_CUDA else "fp32", provider=provider, passes="eval", median_ms=median_ms,
               host_ms=host_ms, videos_per_s=VIDEOS / (median_ms * 1e-3), peak_mem_gb=peak, flops=flops,
               tflops=tflops, mfu=tflops / hardware["peak_tflops"]["bf16"] if hardware else None)
    benchmark.group = f"eval {preset} {VIDEOS} videos x {views} views"
    benchmark.extra_info.update(row)
    sync = torch.cuda.synchronize if HAS_CUDA else (lambda: None)
    benchmark.pedantic(lambda: (case.score(), sync()), rounds=1, warmup_rounds=0)  # timed above
    record(row)
