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
from .data import UnreadableData, VideoDataset, make_synthetic_dataset, read_class_names, read_video_list
from .distributed import Runtime, init_runtime, shutdown
from .engine import EpochSampler, evaluate, make_prompts, train_one_epoch
from .optim import param_groups, warmup_cosine
from .text import MLMVocabulary

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "m2clip_fast")
# The built-in default run (no --train-list): what each unset option becomes.
COMMON_DEFAULTS = dict(sampling="dense", randaugment=False, grad_accum=1, base_lr=1e-3, weight_decay=1e-2, clip_grad=1.0,
                       amp="auto", seed=0, mlm_mask_rate=0.2, crossmodal_loss="released")
SYNTHETIC_DEFAULTS = dict(COMMON_DEFAULTS, preset="tiny", num_frames=8, sampling_rate=2, batch_size=16, epochs=20,
                          warmup_epochs=1, lr=2e-3, output_dir="runs/synthetic", views="1x1", flip=False, workers=2)
REAL_DEFAULTS = dict(COMMON_DEFAULTS, preset="vit-b16-k400", num_frames=8, sampling_rate=16, batch_size=8, epochs=12,
                     warmup_epochs=2, lr=None, output_dir="runs/m2clip", views="4x3", flip=True, workers=4)
# What defines a run, stored in its checkpoints: a resumed run continues with these, an --eval-only run
# evaluates with the data settings among them, unless the command line says otherwise (see _apply_saved).
RUN_SETTINGS = ("num_frames", "sampling_rate", "sampling", "views", "flip", "randaugment", "batch_size", "grad_accum",
                "epochs", "warmup_epochs", "lr", "base_lr", "weight_decay", "clip_grad", "amp", "seed",
                "mlm_mask_rate", "crossmodal_loss")
DATA_SETTINGS = ("num_frames", "sampling_rate", "sampling", "views")


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
        "(tiny model, 20 epochs on the CPU: about a minute on 2 cores). Multi-GPU: torchrun --nproc_per_node N "
        "train.py ...",
        formatter_class=_HelpFormatter,
    )
    d = p.add_argument_group("data")
    d.add_argument("--train-list", help="training list file, '<video path> <label>' per line")
    d.add_argument("--val-list", help="validation list file (same format)")
    d.add_argument("--data-root", default="", help="folder the list files' video paths are relative to (default: "
                   "as written, else the list file's own folder if the videos are there)")
    d.add_argument("--classes", help="class-name CSV 'id,name' (e.g. kinetics_400_labels.csv)")
    d.add_argument("--eval-classes", help="zero-shot: evaluate --val-list against this other class CSV "
                   "(cross-modal head only; labels in --val-list refer to it)")
    d.add_argument("--num-frames", type=int, help="frames per clip (T) [8]")
    d.add_argument("--sampling-rate", type=int, help="frame stride of dense sampling [16; demo 2]")
    d.add_argument("--sampling", choices=("dense", "segment"), help="dense clips or TSN segments [dense]")
    d.add_argument("--views", help="test views SxT: spatial crops x temporal clips, scores averaged [4x3; demo 1x1]")
    d.add_argument("--no-flip", dest="flip", action="store_false", default=None,
                   help="no horizontal flips (direction-sensitive data such as SSv2; the demo never flips)")
    d.add_argument("--randaugment", action="store_true", default=None, help="RandAugment, one draw per clip")
    d.add_argument("--workers", type=int, help="DataLoader worker processes per rank [4, or the CPUs this process "
                                                "may use if fewer; demo 2]")
    m = p.add_argument_group("model")
    m.add_argument("--preset", choices=sorted(PRESETS), help="model preset [vit-b16-k400; demo tiny]")
    m.add_argument("--pretrained", help="local CLIP weights: OpenAI .pt archive or open_clip state dict")
    m.add_argument("--use-fused", action="store_true", help="fused Triton adapters (CUDA)")
    m.add_argument("--mlm-mask-rate", type=float, help="share of class-name words masked for the MLM head [0.2]")
    m.add_argument("--crossmodal-loss", choices=("released", "logits"),
                   help="'released': CE on softmax probabilities (reproduces the paper; the default); 'logits': CE "
                   "on logits")
    o = p.add_argument_group("optimisation")
    o.add_argument("--batch-size", type=int, help="videos per rank per step [8; demo 16]")
    o.add_argument("--grad-accum", type=int, help="gradient accumulation steps [1]")
    o.add_argument("--epochs", type=int, help="training epochs [12; demo 20]")
    o.add_argument("--warmup-epochs", type=float, help="linear warmup epochs, then cosine [2; demo 1]")
    o.add_argument("--lr", type=float, help="learning rate (default: base-lr x total batch / 256; demo 2e-3)")
    o.add_argument("--base-lr", type=float, help="learning rate at a total batch of 256 [1e-3]")
    o.add_argument("--weight-decay", type=float, help="AdamW weight decay, 0 on biases and norms [1e-2]")
    o.add_argument("--clip-grad", type=float, help="gradient-norm clipping before the step, 0: off [1.0]")
    o.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"),
                   help="mixed precision; auto (the default) = bf16 on GPU, off on CPU")
    o.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (benchmarks, smoke tests)")
    r = p.add_argument_group("run")
    r.add_argument("--output-dir", help="checkpoints and metrics.jsonl [runs/m2clip; demo runs/synthetic]")
    r.add_argument("--resume", help="'auto' (the latest checkpoint in --output-dir, if any) or a checkpoint path. A "
                   "resumed run continues with its own settings (epochs, schedule, batch, data); a flag that "
                   "changes one is refused unless --allow-changes; --eval-only takes its data settings")
    r.add_argument("--allow-changes", action="store_true",
                   help="let flags change a resumed run's settings (each change is announced)")
    r.add_argument("--eval-only", action="store_true", help="only evaluate (the --resume checkpoint, or the fresh model)")
    r.add_argument("--save-every", type=int, default=0, help="also checkpoint every N optimizer steps (0: per epoch)")
    r.add_argument("--log-interval", type=int, default=10, help="optimizer steps between train log points")
    r.add_argument("--seed", type=int, help="random seed [0]")
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
    args.output_dir = args.output_dir or defaults["output_dir"]
    # The checkpoint first: a resumed (or evaluated) run's own settings come before the mode's defaults.
    if args.resume not in (None, "auto") and not os.path.isfile(args.resume):
        parser.error(f"--resume: checkpoint not found: {args.resume}")
    args.resume_path = checkpointing.latest(args.output_dir) if args.resume == "auto" else args.resume
    try:
        args.checkpoint = checkpointing.load(args.resume_path) if args.resume_path else None
    except ValueError as err:
        parser.error(f"--resume: {err}")
    args.changes = _apply_saved(args, parser)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not workers_given:  # by default no more workers than CPUs this process may use
        args.workers = min(args.workers, available_cpus())
    if args.synthetic:
        paths = make_synthetic_dataset(os.path.join(args.cache_dir, "synthetic-v2"))
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
    if args.classes is None and args.checkpoint is None:
        parser.error("--classes is required (or --resume a checkpoint, whose classes are used)")
    try:
        args.class_names = read_class_names(args.classes) if args.classes else list(args.checkpoint["class_names"])
        args.eval_class_names = read_class_names(args.eval_classes) if args.eval_classes else None
        eval_k = len(args.eval_class_names or args.class_names)
        args.train_records = _read_videos(args.train_list, args.data_root, len(args.class_names), parser) \
            if args.train_list and not args.eval_only else None
        args.val_records = _read_videos(args.val_list, args.data_root, eval_k, parser) if args.val_list else None
    except ValueError as err:
        parser.error(str(err))
    return args


def _apply_saved(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[tuple[str, object, object]]:
    """Fill unset run settings from the checkpoint's (all of them to resume training, the data settings
    for --eval-only). Returns the flags that differ from the checkpoint's run as (name, run's, given); to
    resume training they are refused unless --allow-changes."""
    saved = (args.checkpoint or {}).get("settings") or {}
    keys = DATA_SETTINGS if args.eval_only else RUN_SETTINGS
    given = {k: getattr(args, k) for k in keys if k in saved and getattr(args, k) is not None}
    changes = [(k, saved[k], v) for k, v in given.items() if str(v).lower() != str(saved[k]).lower()]
    if changes and not args.eval_only and not args.allow_changes:
        listed = "; ".join(f"--{k.replace('_', '-')} {new} (the run used {old})" for k, old, new in changes)
        parser.error(f"--resume continues the run in {args.resume_path} with its own settings, but {listed}: drop "
                     "the flag, or pass --allow-changes to apply it")
    for k in keys:
        if getattr(args, k) is None and k in saved:
            setattr(args, k, saved[k])
    return changes


def _read_videos(list_file: str, root: str, num_classes: int, parser: argparse.ArgumentParser) -> list:
    """The list's records, with their paths checked up front on a sample: a forgotten --data-root fails
    here with a hint instead of as a stream of unreadable videos. With no --data-root and paths that do
    not exist as written, the list file's own folder is tried (and said)."""
    records = read_video_list(list_file, root, num_classes)
    sample = records[:: max(1, len(records) // 16)][:16]
    if any(os.path.exists(r.path) for r in sample):
        return records
    here = os.path.dirname(os.path.abspath(list_file))
    if not root:
        nearby = read_video_list(list_file, here, num_classes)
        if any(os.path.exists(r.path) for r in nearby[:: max(1, len(nearby) // 16)][:16]):
            print(f"note: no --data-root; the videos of {list_file} are relative to its folder {here}", flush=True)
            return nearby
    parser.error(f"{list_file}: none of {len(sample)} sampled videos exist (e.g. {sample[0].path}); give --data-root, "
                 "the folder the list's paths are relative to")


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
        position = f"epoch {ckpt['epoch']}, step {ckpt['step']}"
        if not args.eval_only:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            epoch, step, batches_done, best = ckpt["epoch"], ckpt["step"], ckpt["batches_done"], ckpt.get("best")
            checkpointing.set_rng_state(ckpt["rng"])
        args.checkpoint = ckpt = None  # its tensors now live in the model and optimizer: free the copies
        if runtime.is_main:
            print(f"{'evaluating' if args.eval_only else 'resumed from'} {resume} ({position})", flush=True)
    if runtime.is_main:
        _print_summary(args, runtime, cfg, train_loader, val_loader, steps_per_epoch, world_batch, lr, amp)
    if resume and not args.eval_only and train_loader is not None and epoch >= args.epochs:
        if runtime.is_main:
            print(f"{resume} is a finished run ({epoch} of {args.epochs} epochs, step {step}): nothing to train. "
                  "--eval-only evaluates it; without --resume (or with another --output-dir) a new run starts.",
                  flush=True)
        shutdown(runtime)
        return {}

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
            "settings": {k: getattr(args, k) for k in RUN_SETTINGS},
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
                raise UnreadableData(f"epoch {epoch}: {skipped} unreadable videos against {len(train_loader.sampler)} "
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
            scored = f"{metrics['videos']} videos"
            if metrics["unreadable"]:
                scored = (f"{metrics['videos']} of {metrics['listed']} listed videos ({metrics['unreadable']} "
                          "unreadable, named in the warnings above)")
            print(f"done in {elapsed:.0f}s: {', '.join(parts)} on {scored} (chance {chance:.1f}%); output in "
                  f"{out_dir}", flush=True)
        else:
            print(f"done in {elapsed:.0f}s; output in {out_dir}", flush=True)
    shutdown(runtime)
    return metrics


def _print_summary(args, runtime: Runtime, cfg: M2CLIPConfig, train_loader, val_loader, steps_per_epoch: int,
                   world_batch: int, lr: float, amp: str) -> None:
    """What this run is about to do, in a few lines, with the settings a user most often gets wrong."""
    videos = [f"{len(train_loader.dataset)} training videos" if train_loader is not None else None,
              f"{len(val_loader.dataset)} validation videos ({args.views} views)" if val_loader is not None else None]
    model = f"preset {args.preset}" if not args.resume_path else f"the model of {os.path.basename(args.resume_path)}"
    print(f"m2clip_fast: {runtime.device} x {runtime.world_size}, {model}, {cfg.num_frames} frames, fused adapters "
          f"{'on' if cfg.use_fused else 'off'}; " + ", ".join(v for v in videos if v), flush=True)
    for name, old, new in args.changes:
        print(f"note: --{name.replace('_', '-')} {new}, where the checkpoint's run used {old}", flush=True)
    if train_loader is None or args.eval_only:
        return
    how = "" if args.lr is not None else f" (base-lr {args.base_lr:g} x total batch {world_batch} / 256)"
    print(f"training: {args.epochs} epochs x {steps_per_epoch} steps, total batch {world_batch}, lr {lr:.3g}{how}, "
          f"flips {'on' if args.flip else 'off'}, {args.workers} loader workers, mixed precision {amp}", flush=True)
    if args.lr is None and lr < 1e-4:
        print(f"warning: the learning rate scaled to a total batch of {world_batch} is {lr:.2g}: training will be "
              "slow to learn; set --lr (or a larger batch)", flush=True)
    if args.flip:
        print("note: clips are flipped left-right at random; classes that depend on direction (SSv2 and the like) "
              "need --no-flip", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = resolve_args(argv)
    try:
        run(args)
    except UnreadableData as err:
        sys.exit(f"train.py: error: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
