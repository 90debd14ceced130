"""A whole M2-CLIP training step (forward, the four losses, backward, AdamW step): fused adapters,
fused adapters with gradient checkpointing (the memory it saves), eager adapters, and full fine-tuning
(every CLIP weight trainable too). Clips/s, step time, peak memory.

On CPU: the ``tiny`` preset, eager adapters vs full fine-tuning (the fused kernels are not timed under
Triton's interpreter). On GPU: ``vit-b16-k400`` (random weights), 224 px, bf16 autocast.
"""
from __future__ import annotations

import statistics
import time

import pytest
import torch

from .cases import train_step
from .harness import HAS_CUDA, device_time_ms

if HAS_CUDA:
    CASES = [("vit-b16-k400", B, p) for B in (8, 32) for p in ("fused", "eager", "full-finetune", "fused+ckpt")]
else:
    CASES = [("tiny", 4, p) for p in ("eager", "full-finetune")]


@pytest.mark.parametrize("preset, batch, provider", CASES)
def test_train_step(benchmark, record, preset, batch, provider):
    device = "cuda" if HAS_CUDA else "cpu"
    try:
        step, trainable = train_step(preset, batch, provider, device)
        step()  # warm-up: autotune, allocator, optimizer state
        if HAS_CUDA:
            torch.cuda.reset_peak_memory_stats()
            step()
            peak = torch.cuda.max_memory_allocated() / 1e9
            median_ms = device_time_ms(step)
        else:
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                step()
                times.append((time.perf_counter() - t0) * 1e3)
            median_ms, peak = statistics.median(times), None  # CPU: no per-run peak-memory counter
    except torch.cuda.OutOfMemoryError:
        pytest.skip(f"{preset} B={batch} {provider}: out of memory")
    row = dict(suite="train_step", op="m2clip_train_step", width=preset, B=batch, T=8,
               dtype="bf16" if HAS_CUDA else "fp32", provider=provider, passes="step", median_ms=median_ms,
               clips_per_s=batch / (median_ms * 1e-3), peak_mem_gb=peak, trainable_params=trainable)
    benchmark.group = f"train step {preset} B={batch}"
    benchmark.extra_info.update(row)
    sync = torch.cuda.synchronize if HAS_CUDA else (lambda: None)
    benchmark.pedantic(lambda: (step(), sync()), rounds=3, warmup_rounds=0)  # device time: do_bench above
    record(row)
