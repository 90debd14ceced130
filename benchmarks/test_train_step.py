"""A whole M2-CLIP training step as the trainer runs it (the four losses with the cached class prefix,
backward, clipping, AdamW step: ``m2clip_fast.engine.StepRunner``) for every provider of
``cases.TRAIN_PROVIDERS`` side by side: fused adapters replayed from CUDA graphs (the trainer's default on a GPU)
and issued from Python, the fused model under ``torch.compile(mode="reduce-overhead")`` (torch's own graphs),
eager adapters with and without graphs, the eager model under ``torch.compile`` (the user's alternative), fused
with gradient checkpointing, full fine-tuning on the same fast step, and the released code's recipe (fp16 +
GradScaler, open_clip's block). Each row: clips/s, step time (CUDA events over ``STEPS`` steps after warm-up, the
median), host time to issue a step, peak memory (the row's own, warm-up and capture included), the step's FLOPs
(``benchmarks.step_trace``: counted, the same model FLOPs for every adapter provider) and MFU against the bf16 GEMM
peak measured in the same run.

On CPU: the ``tiny`` preset (no MFU: there is no measured peak), without ``eager+compile`` (minutes of C++
compilation) and the fused providers (the interpreter is not a speed).
"""
from __future__ import annotations

import functools

import pytest
import torch

from .cases import train_step
from .harness import HAS_CUDA, RowMemory, time_calls

STEPS = 10  # timed steps a row (a 100 ms do_bench budget would be one sample of a 130 ms step)
WARMUP = 3  # compilation, autotuning, the allocator, the optimizer's state
if HAS_CUDA:
    # The issues' target rows first (a budgeted run always has them): the trainer's step at both batches, what it
    # gains over issuing from Python, and the user's alternatives; then the rest of the grid.
    FIRST = [(32, "fused+graph"), (8, "fused+graph"), (8, "fused"), (32, "fused"), (32, "eager+compile"),
             (32, "eager"), (32, "full-finetune"), (32, "released"), (8, "fused+reduce-overhead"), (8, "eager+graph")]
    PROVIDERS = ("fused+graph", "fused", "fused+reduce-overhead", "eager+compile", "eager+graph", "eager",
                 "full-finetune", "fused+ckpt", "released")
    CASES = [("vit-b16-k400", B, p) for B, p in FIRST + [(B, p) for B in (32, 8) for p in PROVIDERS
                                                          if (B, p) not in FIRST]]
else:
    CASES = [("tiny", 4, p) for p in ("eager", "full-finetune", "released")]


@functools.lru_cache(maxsize=None)
def step_flops(preset: str, batch: int, full: bool) -> float:
    """FLOPs of one step counted on fake tensors: the eager-adapter step's for every adapter provider (the
    method's work, whatever runs it), full fine-tuning's own step's for it."""
    from .step_trace import trace_step

    return trace_step("full-finetune" if full else "eager", preset, batch)["flops"]


@pytest.mark.parametrize("preset, batch, provider", CASES)
def test_train_step(benchmark, record, request, preset, batch, provider):
    device = "cuda" if HAS_CUDA else "cpu"
    hardware = request.getfixturevalue("hardware") if HAS_CUDA else None
    memory = RowMemory()
    try:
        step, params, _ = train_step(preset, batch, provider, device)
        trainable = sum(p.numel() for p in params)
        for _ in range(WARMUP):  # counted: a captured step's graph pool is taken here, at its capture
            step()
        median_ms, host_ms = time_calls(step, STEPS)
        peak = memory.peak_gb()
    except torch.cuda.OutOfMemoryError:
        pytest.skip(f"{preset} B={batch} {provider}: out of memory")
    flops = step_flops(preset, batch, provider == "full-finetune")  # the same work whoever issues it
    tflops = flops / (median_ms * 1e-3) / 1e12
    row = dict(suite="train_step", op="m2clip_train_step", width=preset, B=batch, T=8,
               dtype="fp16" if provider == "released" and HAS_CUDA else "bf16" if HAS_CUDA else "fp32",
               provider=provider, passes="step", median_ms=median_ms, host_ms=host_ms, steps=STEPS,
               clips_per_s=batch / (median_ms * 1e-3), peak_mem_gb=peak, trainable_params=trainable,
               flops=flops, tflops=tflops, mfu=tflops / hardware["peak_tflops"]["bf16"] if hardware else None)
    benchmark.group = f"train step {preset} B={batch}"
    benchmark.extra_info.update(row)
    sync = torch.cuda.synchronize if HAS_CUDA else (lambda: None)
    benchmark.pedantic(lambda: (step(), sync()), rounds=1, warmup_rounds=0)  # timed above
    record(row)
