"""``python train.py``: train and evaluate M2-CLIP on video, on one device or many (torchrun).

With no ``--train-list`` it runs the built-in default: a small synthetic motion-direction data set
(generated once into a cache folder), the ``tiny`` preset, on the CPU in a few minutes.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import sys
import time
from functools import partial
from typing import Optional, Sequence

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from . import checkpointing
from .checkpoint import build_model
from .config import PRESETS, M2CLIPConfig
from .data import VideoDataset, make_synthetic_dataset, read_class_names, read_video_list
from .distributed import Runtime, init_runtime, shutdown
from .engine import EpochSampler, evaluate, make_prompts, train_one_epoch
from .optim import param_groups, warmup_cosine
from .text import MLMVocabulary

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "m2clip_fast")
# The built-in default run (no --train-list): what each unset option becomes.
SYNTHETIC_DEFAULTS = dict(preset="tiny", num_frames=8, sampling_rate=2, batch_size=16, epochs=20, warmup_epochs=1,
                          lr=2e-3, output_dir="runs/synthetic", views="1x1", flip=False, workers=2)
REAL_DEFAULTS = dict(preset="vit-b16-k400", num_frames=8, sampling_rate=16, batch_size=8, epochs=12, warmup_epochs=2,
                     lr=None, output_dir="runs/m2clip", views="4x3", flip=True, workers=4)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where it does not depend on the mode (real data or the demo)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train and evaluate M2-CLIP on video. Without --train-list: the built-in synthetic demo "
        "(tiny model, CPU, a few minutes). Multi-GPU: torchrun --nproc_per_node N train.py ...",
        formatter_class=_HelpFormatter,
    )
    d = p.add_argument_group("data")
    d.add_argument("--train-list", help="training list file, '<video path> <label>' per line")
    d.add_argument("--val-list", help="validation list file (same format)")
    d.add_argument("--data-root", default="", help="folder the list files' video paths are relative to")
    d.add_argument("--classes", help="class-name CSV 'id,name' (e.g. kinetics_400_labels.csv)")
    d.add_argument("--eval-classes", help="zero-shot: evaluate --val-list against this other class CSV "
                   "(cross-modal head only; labels in --val-list refer to it)")
    d.add_argument("--num-frames", type=int, help="frames per clip (T) [8]")
    d.add_argument("--sampling-rate", type=int, help="frame stride of dense sampling [16; demo 2]")
    d.add_argument("--sampling", choices=("dense", "segment"), default="dense", help="dense clips or TSN segments")
    d.add_argument("--views", help="test views SxT: spatial crops x temporal clips, scores averaged [4x3; demo 1x1]")
    d.add_argument("--no-flip", dest="flip", action="store_false", default=None,
                   help="no horizontal flips (direction-sensitive data such as SSv2; the demo never flips)")
    d.add_argument("--randaugment", action="store_true", help="RandAugment, one draw per clip")
    d.add_argument("--workers", type=int, help="DataLoader worker processes per rank [4, or the CPUs this process "
                                                "may use if fewer; demo 2]")
    m = p.add_argument_group("model")
    m.add_argument("--preset", choices=sorted(PRESETS), help="model preset [vit-b16-k400; demo tiny]")
    m.add_argument("--pretrained", help="local CLIP weights: OpenAI .pt archive or open_clip state dict")
    m.add_argument("--use-fused", action="store_true", help="fused Triton adapters (CUDA)")
    m.add_argument("--mlm-mask-rate", type=float, default=0.2, help="share of class-name words masked for the MLM head")
    m.add_argument("--crossmodal-loss", choices=("released", "logits"), default="released",
                   help="'released': CE on softmax probabilities (reproduces the paper); 'logits': CE on logits")
    o = p.add_argument_group("optimisation")
    o.add_argument("--batch-size", type=int, help="videos per rank per step [8; demo 16]")
    o.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    o.add_argument("--epochs", type=int, help="training epochs [12]")
    o.add_argument("--warmup-epochs", type=float, help="linear warmup epochs, then cosine [2; demo 1]")
    o.add_argument("--lr", type=float, help="learning rate (default: base-lr x total batch / 256; demo 2e-3)")
    o.add_argument("--base-lr", type=float, default=1e-3, help="learning rate at a total batch of 256")
    o.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay (0 on biases and norms)")
    o.add_argument("--clip-grad", type=float, default=1.0, help="gradient-norm clipping before the step (0: off)")
    o.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto",
                   help="mixed precision; auto = bf16 on GPU, off on CPU")
    o.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (benchmarks, smoke tests)")
    r = p.add_argument_group("run")
    r.add_argument("--output-dir", help="checkpoints and metrics.jsonl [runs/m2clip; demo runs/synthetic]")
    r.add_argument("--resume", help="'auto' (the latest checkpoint in --output-dir, if any) or a checkpoint path")
    r.add_argument("--eval-only", action="store_true", help="only evaluate (the --resume checkpoint, or the fresh model)")
    r.add_argument("--save-every", type=int, default=0, help="also checkpoint every N optimizer steps (0: per epoch)")
    r.add_argument("--log-interval", type=int, default=10, help="optimizer steps between train log points")
    r.add_argument("--seed", type=int, default=0, help="random seed")
    r.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
    r.add_argument("--cache-dir", default=DEFAULT_CACHE, help="where the demo data set is generated")
    return p


def resolve_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse, fill mode-dependent defaults, and check files and values (clear errors, exit code 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.synthetic = args.train_list is None and args.eval_only is False
    defaults = SYNTHETIC_DEFAULTS if args.synthetic else REAL_DEFAULTS
    workers_given = args.workers is not None
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not workers_given:  # by default no more workers than CPUs this process may use
        args.workers = min(args.workers, available_cpus())
    if args.synthetic:
        paths = make_synthetic_dataset(os.path.join(args.cache_dir, "synthetic-v1"))
        args.train_list, args.val_list, args.classes, args.data_root = (
            paths.train_list, paths.val_list, paths.classes_csv, paths.root)
    if args.train_list is None and args.val_list is None:
        parser.error("give --train-list (training) or --val-list (with --eval-only)")
    for name in ("train_list", "val_list", "classes", "eval_classes", "pretrained"):
        path = getattr(args, name)
        if path is not None and not os.path.isfile(path):
            parser.error(f"--{name.replace('_', '-')}: file not found: {path}")
    if args.data_root and not os.path.isdir(args.data_root):
        parser.error(f"--data-root: folder not found: {args.data_root}")
    try:
        spatial, temporal = (int(v) for v in args.views.lower().split("x"))
        assert spatial >= 1 and temporal >= 1
    except (ValueError, AssertionError):
        parser.error(f"--views must look like 4x3 (spatial x temporal), got {args.views!r}")
    args.spatial_views, args.temporal_views = spatial, temporal
    for name in ("num_frames", "sampling_rate", "batch_size", "grad_accum", "epochs", "log_interval"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.resume not in (None, "auto") and not os.path.isfile(args.resume):
        parser.error(f"--resume: checkpoint not found: {args.resume}")
    args.resume_path = checkpointing.latest(args.output_dir) if args.resume == "auto" else args.resume
    try:
        args.checkpoint = checkpointing.load(args.resume_path) if args.resume_path else None
    except ValueError as err:
        parser.error(f"--resume: {err}")
    if args.classes is None and args.checkpoint is None:
        parser.error("--classes is required (or --resume a checkpoint, whose classes are used)")
    try:
        args.class_names = read_class_names(args.classes) if args.classes else list(args.checkpoint["class_names"])
        args.eval_class_names = read_class_names(args.eval_classes) if args.eval_classes else None
        eval_k = len(args.eval_class_names or args.class_names)
        args.train_records = read_video_list(args.train_list, args.data_root, len(args.class_names)) \
            if args.train_list and not args.eval_only else None
        args.val_records = read_video_list(args.val_list, args.data_root, eval_k) if args.val_list else None
    except ValueError as err:
        parser.error(str(err))
    return args


def _autocast(args: argparse.Namespace, device: torch.device):
    amp = args.amp if args.amp != "auto" else ("bf16" if device.type == "cuda" else "off")
    if amp == "off":
        return contextlib.nullcontext, amp
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return partial(torch.autocast, device.type, dtype=dtype), amp


def _loader(dataset, sampler, args, train: bool, runtime: Runtime) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
        pin_memory=runtime.device.type == "cuda", drop_last=train and len(sampler) >= args.batch_size,
        generator=torch.Generator().manual_seed(args.seed),  # leaves the global RNG (dropout) alone: exact resume
    )


def run(args: argparse.Namespace) -> dict:
    """The whole job; returns the final validation metrics (empty without a validation list)."""
    runtime = init_runtime(args.device)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    resume, ckpt = args.resume_path, args.checkpoint
    if ckpt is not None:  # the checkpoint's own model: config, weights, backbone source
        model = checkpointing.model_from_checkpoint(ckpt, use_fused=args.use_fused, pretrained=args.pretrained)
        pretrained = args.pretrained or ckpt.get("pretrained")
        if model.cfg.num_classes != len(args.class_names):
            raise SystemExit(f"error: {resume} was trained on {model.cfg.num_classes} classes; --classes lists "
                             f"{len(args.class_names)}")
    else:
        cfg = M2CLIPConfig.preset(
            args.preset, num_classes=len(args.class_names), num_frames=args.num_frames,
            mlm_vocab_size=max(len(MLMVocabulary.from_class_names(args.class_names)), 1),
            mlm_mask_rate=args.mlm_mask_rate, crossmodal_loss=args.crossmodal_loss, use_fused=args.use_fused,
        )
        pretrained = args.pretrained
        model = build_model(cfg, pretrained=pretrained)
    cfg = model.cfg
    model.to(runtime.device)
    crop = model.image_size[0]  # the backbone's positional embedding fixes the input size
    autocast, amp = _autocast(args, runtime.device)
    out_dir = args.output_dir
    log_path = os.path.join(out_dir, "metrics.jsonl")
    if runtime.is_main:
        os.makedirs(out_dir, exist_ok=True)

    def log(record: dict) -> None:
        if runtime.is_main:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    # Data.
    val_loader = None
    if args.val_records:
        val_set = VideoDataset(args.val_records, args.num_frames, crop, train=False, sampling_mode=args.sampling,
                               sampling_rate=args.sampling_rate, spatial_views=args.spatial_views,
                               temporal_views=args.temporal_views, seed=args.seed)
        val_loader = _loader(val_set, EpochSampler(len(val_set), runtime, shuffle=False, pad=False), args, False, runtime)
    eval_names = args.eval_class_names or args.class_names
    eval_prompts = make_prompts(model, eval_names, runtime.device, autocast)

    # Optimiser, schedule, state.
    world_batch = args.batch_size * runtime.world_size * args.grad_accum
    lr = args.lr if args.lr is not None else args.base_lr * world_batch / 256
    optimizer = torch.optim.AdamW(param_groups(model, lr, args.weight_decay), lr=lr)
    steps_per_epoch = 1
    train_loader = None
    if args.train_records and not args.eval_only:
        randaugment = None
        if args.randaugment:
            from torchvision.transforms import v2

            randaugment = v2.RandAugment()
        train_set = VideoDataset(args.train_records, args.num_frames, crop, train=True, sampling_mode=args.sampling,
                                 sampling_rate=args.sampling_rate, flip=args.flip, randaugment=randaugment,
                                 seed=args.seed)
        sampler = EpochSampler(len(train_set), runtime, shuffle=True, seed=args.seed)
        train_loader = _loader(train_set, sampler, args, True, runtime)
        steps_per_epoch = max(1, len(train_loader) // args.grad_accum)
    total_steps = steps_per_epoch * args.epochs
    scheduler = warmup_cosine(optimizer, total_steps, round(args.warmup_epochs * steps_per_epoch))
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=amp == "fp16")
    epoch, step, batches_done, best = 0, 0, 0, None

    if not resume and not args.eval_only and runtime.is_main:
        if checkpointing.latest(out_dir):
            print(f"note: {out_dir} holds a checkpoint; starting afresh and overwriting it (--resume auto continues "
                  "it)", flush=True)
        if os.path.exists(log_path):  # a fresh run starts a fresh log; the old one is kept aside
            aside = os.path.join(out_dir, time.strftime("metrics.%Y%m%d-%H%M%S.jsonl",
                                                        time.localtime(os.path.getmtime(log_path))))
            os.replace(log_path, aside)
            print(f"note: the previous run's metrics.jsonl is now {os.path.basename(aside)}", flush=True)
    if ckpt is not None:
        if not args.eval_only:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            epoch, step, batches_done, best = ckpt["epoch"], ckpt["step"], ckpt["batches_done"], ckpt.get("best")
            checkpointing.set_rng_state(ckpt["rng"])
        args.checkpoint = ckpt = None  # its tensors now live in the model and optimizer: free the copies
        if runtime.is_main:
            print(f"resumed from {resume} (epoch {epoch}, step {step})", flush=True)

    train_model = model
    if runtime.distributed and train_loader is not None:
        train_model = DistributedDataParallel(model, device_ids=[runtime.device] if runtime.device.type == "cuda" else None)

    def save(name: str, epoch_: int, step_: int, batches_: int) -> None:
        if not runtime.is_main:
            return
        state = {
            "format": checkpointing.FORMAT, "config": dataclasses.asdict(cfg), "class_names": args.class_names,
            "pretrained": os.path.abspath(pretrained) if pretrained else None,
            "model": checkpointing.model_weights(model, pretrained),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch_, "step": step_, "batches_done": batches_, "best": best, "rng": checkpointing.rng_state(),
        }
        checkpointing.atomic_save(state, os.path.join(out_dir, name))

    def validate(epoch_: int, step_: int) -> dict:
        metrics = evaluate(model, val_loader, eval_prompts.tokens, eval_prompts.prefix, autocast, runtime,
                           visual_head=args.eval_class_names is None, desc=f"eval {epoch_}")
        log({"split": "val", "epoch": epoch_, "step": step_, **metrics})
        return metrics

    metrics: dict = {}
    start = time.time()
    if train_loader is not None and not args.eval_only:
        prompts = make_prompts(model, args.class_names, runtime.device, autocast)
        while epoch < args.epochs and (args.max_steps is None or step < args.max_steps):
            train_loader.sampler.set_epoch(epoch, start=batches_done * args.batch_size)
            train_loader.dataset.set_epoch(epoch)

            def on_step(step_: int, batches_: int, epoch_: int = epoch) -> None:
                if args.save_every and step_ % args.save_every == 0:
                    save(checkpointing.LATEST, epoch_, step_, batches_)

            step, skipped, stopped_at = train_one_epoch(
                train_model, train_loader, prompts, optimizer, scheduler, scaler, autocast, runtime, epoch, step,
                grad_accum=args.grad_accum, clip_grad=args.clip_grad, mask_rate=args.mlm_mask_rate, seed=args.seed,
                log_interval=args.log_interval, log=log, on_step=on_step, max_steps=args.max_steps,
                first_batch=batches_done,
            )
            if runtime.is_main and skipped:
                print(f"epoch {epoch}: {skipped} unreadable videos were skipped and replaced", flush=True)
            if skipped > len(train_loader.sampler):
                raise RuntimeError(f"epoch {epoch}: {skipped} unreadable videos against {len(train_loader.sampler)} "
                                   "read: most of the data set is unreadable — check --data-root and the list")
            if stopped_at >= 0:  # --max-steps ended the run mid-epoch: resume from this batch
                save(checkpointing.LATEST, epoch, step, stopped_at)
                break
            epoch, batches_done = epoch + 1, 0
            if val_loader is not None:
                metrics = validate(epoch - 1, step)
                if best is None or metrics["top1"] > best:
                    best = metrics["top1"]
                    save("best.pt", epoch, step, 0)
            save(checkpointing.LATEST, epoch, step, 0)
    elif val_loader is not None:
        metrics = validate(epoch, step)

    if runtime.is_main:
        chance = 100.0 / len(eval_names)
        elapsed = time.time() - start
        if metrics:
            parts = [f"top-1 {metrics['top1']:.1f}%"]
            if len(eval_names) > 5:  # with five classes or fewer, top-5 is 100% by construction
                parts.append(f"top-5 {metrics['top5']:.1f}%")
            parts.append(f"cross-modal {metrics['top1_crossmodal']:.1f}%")
            if metrics.get("top1_visual") is not None:
                parts.append(f"visual {metrics['top1_visual']:.1f}%")
            print(f"done in {elapsed:.0f}s: {', '.join(parts)} on {metrics['videos']} videos "
                  f"(chance {chance:.1f}%); output in {out_dir}", flush=True)
        else:
            print(f"done in {elapsed:.0f}s; output in {out_dir}", flush=True)
    shutdown(runtime)
    return metrics


def main(argv: Optional[Sequence[str]] = None) -> int:
    run(resolve_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
