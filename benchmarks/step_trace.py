"""The whole training step and the evaluation forward, traced on fake tensors: device kernels, HBM bytes and
FLOPs a step costs, **predicted** without a GPU (docs/DESIGN.md §4).

    python -m benchmarks.step_trace [--batch 32]

One trainer step as a GPU run replays it (``engine.StepRunner``, docs/DESIGN.md §2.5) — the four losses with the
cached class prefix, the backward, gradient clipping (``foreach``), the fused capturable AdamW, the gradients
zeroed in place; after a first step has made the optimizer's state — at vit-b16-k400 (random
weights), bf16 autocast, the frozen towers stored in bf16 as the trainer stores them. Tensors are
``FakeTensorMode``'s (shapes and dtypes, no values: a B=32 step traces in seconds); Triton launches are
captured, not run. Every aten op that is not a view or an allocation counts as one kernel with the bytes of
the distinct tensors it touches; a Triton launch likewise; FLOPs are ``FlopCounterMode``'s (GEMMs, attention,
convolutions) plus 2·M·N·K per Triton GEMM.

The autocast policy is the CPU's, standing in for CUDA's, which a machine without a GPU cannot enable: both
run GEMMs, convolutions and attention in bf16; CUDA's fp32 list also up-casts ``layer_norm`` (the model runs
it outside autocast, ``model.layer_norm``) and the losses' softmaxes, exps and norms (on [B, K] tensors: a
few small casts). CPU attention is one kernel each way; CUDA's flash backward is three (preprocess, main,
dq convert): 24 more a step at 12 vision blocks (the text tower's prefix is cached; its suffix adds ~4).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from .cases import TRAIN_CLASSES, train_model
from .time_model import CARDS, step_roofline
from .tracing import Launch, trace, unique_bytes

PROVIDERS = ("fused", "eager", "full-finetune")


def _gemm_flops(launch: Launch) -> float:
    if launch.name != "gemm":
        return 0.0
    values = dict(zip(launch.kernel.arg_names, launch.args))  # a JIT function's, or its autotuner's
    return 2.0 * values["M"] * values["N"] * values["K"]


def _summary(launches: list[Launch], aten: list[tuple[str, int]], aten_flops: dict[str, float], batch: int) -> dict:
    """Totals, ``by_op`` ``{op: [kernels, bytes, flops]}`` and the step's roofline per card (predicted)."""
    by_op: dict[str, list[float]] = {}
    for name, nbytes, flops in [*((name, nbytes, 0.0) for name, nbytes in aten),
                                *((f"triton:{x.name}", unique_bytes(x.args), _gemm_flops(x)) for x in launches)]:
        count, total, op_flops = by_op.get(name, (0, 0, 0.0))
        by_op[name] = [count + 1, total + nbytes, op_flops + flops]
    for name, flops in aten_flops.items():  # FlopCounterMode's totals per aten op
        by_op.setdefault(name, [0, 0, 0.0])[2] += flops
    total_flops = sum(f for _, _, f in by_op.values())
    roofline = {}
    for card_name, card in CARDS.items():
        kinds = step_roofline(by_op, card)
        ms = sum(kinds.values())
        roofline[card_name] = dict(ms_by_kind=kinds, ms=ms, clips_per_s=batch / ms * 1e3,
                                   mfu=total_flops / (ms * 1e-3) / card["bf16_achieved"])
    return dict(
        device_kernels=len(aten) + len(launches), triton_kernels=len(launches), aten_kernels=len(aten),
        bytes=sum(b for _, b, _ in by_op.values()), flops=total_flops,
        by_op=dict(sorted(by_op.items(), key=lambda kv: -kv[1][1])), roofline=roofline,
    )


def trace_step(provider: str = "fused", preset: str = "vit-b16-k400", batch: int = 32, frames: int = 8,
               train: bool = True) -> dict:
    """One training step (``train``) or one evaluation forward of ``batch`` clips (``engine.view_probabilities``
    against cached class embeddings) -> ``device_kernels``, ``bytes``, ``flops``, and ``by_op``:
    {op: [kernels, bytes]}."""
    from kernels.runtime import capture_launches
    from m2clip_fast.distributed import Runtime
    from m2clip_fast.engine import StepRunner, StepSettings, TrainStep, class_embeddings, view_probabilities
    from m2clip_fast.optim import build_optimizer, place_state
    from m2clip_fast.prompts import Prompts
    from m2clip_fast.run_state import Optimisation

    model, masker = train_model(preset, provider, frames)
    model.train(train)
    labels = torch.arange(batch) % len(TRAIN_CLASSES)
    mlm = masker(labels, 0.2, torch.Generator().manual_seed(0))
    size = model.image_size[0]
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731 (see the module docstring)
    # Fake tensors hold no memory for a kernel to run on: launches outside the trace are dropped too.
    with FakeTensorMode(allow_non_fake_inputs=True) as mode, capture_launches(lambda *launch: None):
        tokens, labels, *mlm = (mode.from_tensor(t) for t in (masker.class_tokens(), labels, *mlm))
        video = torch.randn(batch, 3, frames, size, size)
        with torch.no_grad(), autocast():
            prefix = model.text_prefix(tokens)
        if not train:  # once an evaluation, as engine.evaluate does
            class_emb = class_embeddings(model, Prompts(tokens, prefix), autocast)

        # The trainer's step as a GPU run captures it (fused capturable AdamW, gradients zeroed in place), traced
        # as it is: fake tensors are not captured.
        optimizer = build_optimizer(model, 1e-3, 1e-2, fused=True, capturable=True)
        place_state(optimizer, torch.device("cpu"), fused=True, capturable=True)
        optim = Optimisation(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
                             torch.amp.GradScaler("cpu", enabled=False))
        run = TrainStep(model, Prompts(tokens, prefix), optim, autocast, Runtime(0, 1, torch.device("cpu")), True)
        runner = StepRunner(run, StepSettings(1, clip_grad=1.0, mask_rate=0.2, seed=0, log_interval=1))
        runner.update.enabled = False

        def step() -> None:
            runner(video, labels, *mlm, update=True)

        def evaluate() -> None:
            with torch.no_grad():
                view_probabilities(model, video[:, None], class_emb, autocast)

        if train:
            step()  # the optimizer's state is made on its first step, once
        flops = FlopCounterMode(display=False)
        with flops:
            launches, aten = trace(step if train else evaluate)
    aten_flops = {op.__name__: n for op, n in flops.get_flop_counts().get("Global", {}).items()}
    return dict(provider=provider, preset=preset, batch=batch, frames=frames, train=train,
                **_summary(launches, aten, aten_flops, batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "step-trace-sm90.json"))
    args = parser.parse_args()
    rows = [trace_step(p, batch=args.batch) for p in PROVIDERS] + [trace_step("fused", batch=args.batch, train=False)]
    for r in rows:
        top = ", ".join(f"{k} {n}×{b / 1e9:.1f} GB" for k, (n, b, _) in list(r["by_op"].items())[:6])
        h100 = r["roofline"]["H100"]
        print(f"{r['provider']:13s} {'train step' if r['train'] else 'eval fwd  '} B={r['batch']}: "
              f"{r['device_kernels']} kernels ({r['triton_kernels']} Triton), {r['bytes'] / 1e9:.1f} GB, "
              f"{r['flops'] / 1e12:.2f} TFLOP; H100 roofline {h100['ms']:.1f} ms, {h100['clips_per_s']:.0f} clips/s, "
              f"MFU {h100['mfu']:.0%} — {top}")
    with open(args.out, "w") as f:
        json.dump(dict(torch=torch.__version__, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), traces=rows), f, indent=1)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
