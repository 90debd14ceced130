"""One run of training and/or evaluation (:class:`Trainer`) of a frozen run plan (:mod:`m2clip_fast.plan`): the
model (fresh, or the checkpoint's own), its data, the optimiser state, where the run stands, checkpoints and the
metrics log."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import signal
import time
import warnings
from functools import partial
from typing import Optional

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from kernels.runtime import EagerFallbackWarning

from . import run_state
from .config import M2CLIPConfig
from .data import Augmentation, EpochSampler, FrameSampling, UnreadableData, VideoDataset
from .distributed import init_runtime, shutdown
from .engine import StepSettings, TrainStep, evaluate, train_one_epoch
from .factory import build_model
from .model import M2CLIP
from .graphs import capture_plan
from .optim import build_optimizer, place_state, warmup_cosine
from .plan import Plan, saved_settings
from .prompts import class_prompts, make_prompts
from .protocols import summarize
from .text import MLMVocabulary


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _autocast(amp: str, device: torch.device):
    """(autocast context factory, the precision it means) for ``--amp``."""
    amp = amp if amp != "auto" else ("bf16" if device.type == "cuda" else "off")
    if amp == "off":
        return contextlib.nullcontext, amp
    return partial(torch.autocast, device.type, dtype=AMP_DTYPES[amp]), amp


class MetricsLog:
    """``metrics.jsonl``: one JSON object per log point, written by the main rank; with ``tensorboard`` the
    numbers also go to TensorBoard (``<out_dir>/tensorboard``, tag ``<split>/<name>``, x = optimizer step)."""

    def __init__(self, out_dir: str, enabled: bool, tensorboard: bool = False) -> None:
        self.path, self.enabled = os.path.join(out_dir, "metrics.jsonl"), enabled
        self.writer = None
        if enabled:
            os.makedirs(out_dir, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

                self.writer = SummaryWriter(os.path.join(out_dir, "tensorboard"))

    def rewind(self, epoch: int, step: int) -> int:
        """A resumed run's log goes on from its checkpoint: rows written after it (a run killed between two
        checkpoints logs them again when it redoes those steps) are dropped. -> how many were dropped."""
        if not (self.enabled and os.path.exists(self.path)):
            return 0
        with open(self.path) as f:
            rows = [line for line in f if line.strip()]
        kept = [line for line in rows if _before(json.loads(line), epoch, step)]
        if len(kept) < len(rows):
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.writelines(kept)
            os.replace(tmp, self.path)
        return len(rows) - len(kept)

    def start_fresh(self) -> Optional[str]:
        """A fresh run starts a fresh log: an old one is renamed aside (its name is returned), never appended to."""
        if not (self.enabled and os.path.exists(self.path)):
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(os.path.getmtime(self.path)))
        aside = os.path.join(os.path.dirname(self.path), f"metrics.{stamp}.jsonl")
        os.replace(self.path, aside)
        return aside

    def __call__(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            tag = record["split"] if "name" not in record else f"{record['split']}/{record['name']}"
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("epoch", "step"):
                    self.writer.add_scalar(f"{tag}/{key}", value, record.get("step", 0))
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _before(row: dict, epoch: int, step: int) -> bool:
    """Whether a metrics row was logged before a checkpoint at (``epoch``, ``step``): training rows up to its
    step; a validation row of an epoch the checkpoint has finished (epoch numbers count finished epochs)."""
    if row.get("step", 0) > step:
        return False
    return row.get("split") != "val" or row.get("epoch", 0) < epoch


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _ignore_interrupts(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which stops at the next step and saves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Interrupted(Exception):
    """Ctrl-C stopped training; the run was saved where it stopped (the message says how to go on)."""


class Trainer:
    """A run: built from the arguments, then :meth:`run` trains (resuming where a checkpoint left off) and
    evaluates, or only evaluates."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.runtime = runtime = init_runtime(plan.run.device)
        torch.manual_seed(plan.recipe.seed)
        random.seed(plan.recipe.seed)
        np.random.seed(plan.recipe.seed)
        self.model, self.pretrained = self._build_model()
        self.model.to(runtime.device)
        if self.model.adapter_backend.startswith("eager reference"):  # the start-up summary says so, and why
            warnings.filterwarnings("ignore", category=EagerFallbackWarning)
        self.autocast, self.amp = _autocast(plan.recipe.amp, runtime.device)
        if self.amp in AMP_DTYPES:  # no per-call casts of the frozen towers
            self.model.store_frozen_in(AMP_DTYPES[self.amp])
        self.log = MetricsLog(plan.run.output_dir, runtime.is_main, tensorboard=plan.run.tensorboard)
        self.eval_names = plan.data.eval_class_names or plan.data.class_names
        self.val_loader = self._loader(plan.data.val, train=False) if plan.data.val else None
        self.quick_val_loader = self.val_loader  # validation during training: cheap views
        if self.val_loader is not None and not plan.run.eval_only and plan.data.quick_views != plan.data.views:
            self.quick_val_loader = self._loader(plan.data.val, train=False, views=plan.data.quick_views)
        self.eval_prompts = class_prompts(self.model, self.eval_names, runtime.device, self.autocast)
        self.train_loader = (self._loader(plan.data.train, train=True)
                             if plan.data.train and not plan.run.eval_only else None)
        self.steps_per_epoch = max(1, len(self.train_loader) // plan.recipe.grad_accum) if self.train_loader else 1
        self.world_batch = plan.recipe.batch_size * runtime.world_size * plan.recipe.grad_accum
        self.lr = plan.recipe.lr if plan.recipe.lr is not None else plan.recipe.base_lr * self.world_batch / 256
        self.graphs, self.why_not_graphs = capture_plan(runtime.device, self.amp, runtime.distributed,
                                                        self.cfg.grad_checkpointing, plan.run.cuda_graphs)
        self.fused_adamw = runtime.device.type == "cuda"
        optimizer = build_optimizer(self.model, self.lr, plan.recipe.weight_decay, self.fused_adamw, self.graphs)
        self.optim = run_state.Optimisation(
            optimizer, warmup_cosine(optimizer, self.steps_per_epoch * plan.recipe.epochs,
                                     round(plan.recipe.warmup_epochs * self.steps_per_epoch)),
            torch.amp.GradScaler(runtime.device.type, enabled=self.amp == "fp16"))
        place_state(optimizer, runtime.device, self.fused_adamw, self.graphs)
        self.epoch, self.step, self.batches_done, self.best = 0, 0, 0, None

    @property
    def cfg(self) -> M2CLIPConfig:
        return self.model.cfg

    def _build_model(self) -> tuple[M2CLIP, Optional[str]]:
        """The checkpoint's own model (config, weights, backbone source), or a fresh one; and where its
        frozen backbone comes from."""
        plan, ckpt = self.plan, self.plan.model.checkpoint
        if ckpt is not None:
            model = run_state.model_from_checkpoint(ckpt, backend=plan.model.backend, pretrained=plan.model.pretrained)
            model.cfg.grad_checkpointing |= plan.model.grad_checkpointing  # memory, not maths
            if model.cfg.num_classes != len(plan.data.class_names):
                raise SystemExit(f"error: {plan.run.resume_path} was trained on {model.cfg.num_classes} classes; "
                                 f"--classes lists {len(plan.data.class_names)}")
            return model, plan.model.pretrained or ckpt.get("pretrained")
        vocab = max(len(MLMVocabulary.from_class_names(plan.data.class_names)), 1)
        if plan.model.init_checkpoint is not None:
            source = plan.model.init_checkpoint
            model, kept, reset = run_state.transfer_from_checkpoint(
                source, len(plan.data.class_names), vocab, backend=plan.model.backend, pretrained=plan.model.pretrained)
            if self.runtime.is_main:
                print(f"initialised from {plan.model.init_from}: kept {len(kept)} trained tensors; started afresh "
                      f"(shape depends on the classes): {', '.join(reset) or 'none'}", flush=True)
            return model, plan.model.pretrained or source.get("pretrained")
        cfg = M2CLIPConfig.preset(plan.model.preset, **{
            "num_classes": len(plan.data.class_names), "num_frames": plan.data.clip.num_frames,
            "mlm_vocab_size": vocab,
            "mlm_mask_rate": plan.recipe.mlm_mask_rate, "crossmodal_loss": plan.recipe.crossmodal_loss,
            "grad_checkpointing": plan.model.grad_checkpointing, **plan.model.overrides,
        })
        return build_model(cfg, pretrained=plan.model.pretrained, backend=plan.model.backend), plan.model.pretrained

    def _loader(self, records: list, train: bool, views: Optional[tuple[int, int]] = None
                ) -> torch.utils.data.DataLoader:
        plan, runtime = self.plan, self.runtime
        spatial, temporal = (1, 1) if train else views or plan.data.views
        recipe, clip = plan.recipe, plan.data.clip
        randaugment = (recipe.randaugment or None) if train else None  # a timm config string, or torchvision's
        if randaugment == "torchvision":
            from torchvision.transforms import v2

            randaugment = v2.RandAugment()
        crop = self.model.image_size[0]  # the backbone's positional embedding fixes the input size
        augment = Augmentation(flip=recipe.flip, randaugment=randaugment, crop_scale=plan.data.crop_range,
                               interpolation=recipe.interpolation)
        dataset = VideoDataset(records, FrameSampling(clip.num_frames, clip.sampling, clip.sampling_rate), crop,
                               train=train, augment=augment, views=(spatial, temporal), seed=recipe.seed)
        sampler = EpochSampler(len(dataset), runtime, shuffle=train, seed=plan.recipe.seed, pad=train)
        return torch.utils.data.DataLoader(
            dataset, batch_size=plan.recipe.batch_size, sampler=sampler, num_workers=plan.data.workers,
            pin_memory=runtime.device.type == "cuda", drop_last=train and len(sampler) >= plan.recipe.batch_size,
            worker_init_fn=_ignore_interrupts,
            generator=torch.Generator().manual_seed(recipe.seed),  # leaves the global RNG (dropout) alone: exact resume
        )

    def save(self, name: str, epoch: int, step: int, batches_done: int) -> None:
        if self.runtime.is_main:
            settings = saved_settings(self.plan.data.clip, self.plan.recipe, self.plan.model.saved_preset)
            state = run_state.training_state(self.model, self.optim, self.plan.data.class_names, self.pretrained,
                                             settings, run_state.Position(epoch, step, batches_done, self.best))
            run_state.atomic_save(state, os.path.join(self.plan.run.output_dir, name))

    def validate(self, loader: Optional[torch.utils.data.DataLoader] = None, desc: Optional[str] = None) -> dict:
        """Evaluate on the validation list (by default with the full ``--views``) and log it."""
        loader = loader or self.val_loader
        metrics = evaluate(self.model, loader, self.eval_prompts, self.autocast, self.runtime,
                           visual_head=self.plan.data.eval_class_names is None, desc=desc or f"eval {self.epoch}",
                           graphs=self.graphs)
        self.log({"split": "val", "epoch": self.epoch, "step": self.step, "views": self._views(loader), **metrics})
        return metrics

    def zero_shot(self) -> dict:
        """The zero-shot protocol: each split against its own classes (cross-modal head), then mean ± std."""
        plan, results = self.plan, []
        for split in plan.data.zero_shot_splits:
            prompts = class_prompts(self.model, split.class_names, self.runtime.device, self.autocast)
            metrics = evaluate(self.model, self._loader(split.records, train=False), prompts, self.autocast,
                               self.runtime, visual_head=False, desc=split.name)
            self.log({"split": "zero-shot", "protocol": plan.data.zero_shot, "name": split.name, **metrics})
            if self.runtime.is_main:
                print(f"{split.name}: top-1 {metrics['top1']:.1f}%, top-5 {metrics['top5']:.1f}% on "
                      f"{metrics['videos']} of {metrics['listed']} videos ({len(split.class_names)} classes)", flush=True)
            results.append(metrics)
        summary = summarize(results)
        self.log({"split": "zero-shot", "protocol": plan.data.zero_shot, "name": "mean over splits", **summary})
        if self.runtime.is_main:
            print(f"{plan.data.zero_shot} zero-shot: top-1 {summary['top1_mean']:.1f} ± {summary['top1_std']:.1f}%, "
                  f"top-5 {summary['top5_mean']:.1f} ± {summary['top5_std']:.1f}% over {len(results)} splits",
                  flush=True)
        return {}

    def _start_or_resume(self) -> None:
        plan, main = self.plan, self.runtime.is_main
        ckpt = plan.model.checkpoint
        if ckpt is None:
            if not plan.run.eval_only and main:
                if run_state.latest(plan.run.output_dir):
                    print(f"note: {plan.run.output_dir} holds a checkpoint; starting afresh and overwriting it "
                          "(--resume auto continues it)", flush=True)
                aside = self.log.start_fresh()
                if aside:
                    print(f"note: the previous run's metrics.jsonl is now {os.path.basename(aside)}", flush=True)
            return
        where = f"epoch {ckpt['epoch']}, step {ckpt['step']}"
        if plan.run.eval_only:  # logged at the checkpoint's position
            self.epoch, self.step = ckpt["epoch"], ckpt["step"]
        else:
            position = run_state.restore(ckpt, self.optim)
            place_state(self.optim.optimizer, self.runtime.device, self.fused_adamw, self.graphs)
            self.epoch, self.step, self.batches_done, self.best = dataclasses.astuple(position)
            dropped = self.log.rewind(self.epoch, self.step) if main else 0
            if dropped:
                print(f"note: dropped {_plural(dropped, 'row')} of metrics.jsonl logged after the checkpoint (they "
                      "are logged again as those steps are redone)", flush=True)
        if main:
            doing = "evaluating" if plan.run.eval_only else "resumed from"
            print(f"{doing} {plan.run.resume_path} ({where})", flush=True)

    def _train(self) -> dict:
        """Epochs from where the run stands; validation and checkpoints after each. -> the last metrics.
        Ctrl-C stops at the end of the step in progress and saves there (a second one stops at once)."""
        plan, runtime, loader = self.plan, self.runtime, self.train_loader
        model = self.model
        if runtime.distributed:
            model = DistributedDataParallel(self.model,
                                            device_ids=[runtime.device] if runtime.device.type == "cuda" else None)
        prompts = make_prompts(self.model, plan.data.class_names, runtime.device, self.autocast)
        metrics: dict = {}
        interrupted = []

        def on_interrupt(signum, frame) -> None:
            if interrupted:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            interrupted.append(signum)
            tqdm.write("interrupt: stopping after this step to save the run (Ctrl-C again stops at once)")

        previous = signal.signal(signal.SIGINT, on_interrupt) if runtime.is_main else None
        try:
            while self.epoch < plan.recipe.epochs and (plan.run.max_steps is None or self.step < plan.run.max_steps):
                metrics = self._epoch(model, loader, prompts, interrupted) or metrics
                if interrupted:
                    raise Interrupted(f"interrupted at epoch {self.epoch}, step {self.step}: saved "
                                      f"{os.path.join(plan.run.output_dir, run_state.LATEST)}; --resume auto (with the "
                                      f"same --output-dir) continues from there")
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        return metrics

    def _epoch(self, model: torch.nn.Module, loader: torch.utils.data.DataLoader, prompts, interrupted: list) -> dict:
        """One epoch from where the run stands, then its validation and checkpoints. -> its validation metrics
        (empty when none ran)."""
        plan, runtime = self.plan, self.runtime
        loader.sampler.set_epoch(self.epoch, start=self.batches_done * plan.recipe.batch_size)
        loader.dataset.set_epoch(self.epoch)

        def on_step(step: int, batches_done: int, epoch: int = self.epoch) -> bool:
            if plan.run.save_every and step % plan.run.save_every == 0:
                self.save(run_state.LATEST, epoch, step, batches_done)
            return bool(interrupted) or (plan.run.max_steps is not None and step >= plan.run.max_steps)

        recipe = plan.recipe
        settings = StepSettings(recipe.grad_accum, recipe.clip_grad, recipe.mlm_mask_rate, recipe.seed,
                                plan.run.log_interval)
        result = train_one_epoch(TrainStep(model, prompts, self.optim, self.autocast, runtime, self.graphs), loader, settings,
                                 self.epoch, (self.step, self.batches_done), self.log, on_step)
        self.step, bad = result.step, len(result.data.unreadable)
        if runtime.is_main and result.replaced:
            print(f"epoch {self.epoch}: {_plural(bad, 'unreadable video')} (named above), replaced by other "
                  f"samples {_plural(result.replaced, 'time')}", flush=True)
        if result.replaced > len(loader.sampler):
            raise UnreadableData(f"epoch {self.epoch}: {result.replaced} unreadable draws against "
                                 f"{len(loader.sampler)} read: most of the data set is unreadable — check --data-root "
                                 "and the list")
        if result.stopped_at >= 0:  # --max-steps or Ctrl-C ended the run mid-epoch: resume from this batch
            self.batches_done = result.stopped_at
            self.save(run_state.LATEST, self.epoch, self.step, result.stopped_at)
            return {}
        last = self.epoch + 1 == plan.recipe.epochs
        validated = {}
        if self.val_loader is not None and ((self.epoch + 1) % plan.run.eval_every == 0 or last):
            validated = self.validate(self.quick_val_loader)
            if runtime.is_main:
                views = self._views(self.quick_val_loader)
                print(f"epoch {self.epoch}: validation top-1 {validated['top1']:.1f}% ({views} views)", flush=True)
        self.epoch, self.batches_done = self.epoch + 1, 0
        if validated and (self.best is None or validated["top1"] > self.best):
            self.best = validated["top1"]
            self.save("best.pt", self.epoch, self.step, 0)
        self.save(run_state.LATEST, self.epoch, self.step, 0)
        if last and self.quick_val_loader is not self.val_loader and not interrupted:  # the finished model, every view
            return self.validate(desc="final eval")
        return validated

    @staticmethod
    def _views(loader: torch.utils.data.DataLoader) -> str:
        return f"{loader.dataset.spatial_views}x{loader.dataset.temporal_views}"

    def run(self) -> dict:
        """The whole job; returns the final validation metrics (empty without a validation list)."""
        plan, runtime = self.plan, self.runtime
        self._start_or_resume()
        if runtime.is_main:
            self._print_summary()
        start = time.time()
        metrics: dict = {}
        epochs = plan.recipe.epochs
        if self.train_loader is not None and plan.run.resume_path and self.epoch >= epochs:
            if runtime.is_main:
                print(f"{plan.run.resume_path} is a finished run ({self.epoch} of {epochs} epochs, step {self.step}): "
                      "nothing to train. --eval-only evaluates it; without --resume (or with another --output-dir) "
                      "a new run starts.", flush=True)
            shutdown(runtime)
            return metrics
        if self.train_loader is not None:
            metrics = self._train()
        elif plan.data.zero_shot_splits:
            metrics = self.zero_shot()
        elif self.val_loader is not None:
            metrics = self.validate()
        if runtime.is_main:
            self._print_result(metrics, time.time() - start)
        self.log.close()
        shutdown(runtime)
        return metrics

    def _print_summary(self) -> None:
        """What this run is about to do, in a few lines, with the settings a user most often gets wrong."""
        plan, runtime = self.plan, self.runtime
        videos = [f"{len(self.train_loader.dataset)} training videos" if self.train_loader is not None else None,
                  f"{len(self.val_loader.dataset)} validation videos ({plan.data.clip.views} views)"
                  if self.val_loader is not None else None]
        resumed = plan.run.resume_path
        model = f"the model of {os.path.basename(resumed)}" if resumed else f"preset {plan.model.preset}"
        print(f"m2clip_fast: {runtime.device} x {runtime.world_size}, {model}, {self.cfg.num_frames} frames, adapters: "
              f"{self.model.adapter_backend}; " + ", ".join(v for v in videos if v), flush=True)
        if plan.model.overrides:
            print("config: preset " + plan.model.preset + " with " + ", ".join(
                f"{k}={getattr(self.cfg, k)}" for k in plan.model.overrides), flush=True)
        print("steps: replayed from CUDA graphs (captured after two warm-up steps of each shape)" if self.graphs
              else f"steps: not captured in CUDA graphs ({self.why_not_graphs})", flush=True)
        for name, old, new in plan.run.changes:
            print(f"note: --{name.replace('_', '-')} {new}, where the checkpoint's run used {old}", flush=True)
        if self.train_loader is None:
            return
        recipe = plan.recipe
        how = "" if recipe.lr is not None else f" (base-lr {recipe.base_lr:g} x total batch {self.world_batch} / 256)"
        print(f"training: {_plural(recipe.epochs, 'epoch')} x {_plural(self.steps_per_epoch, 'step')}, total batch "
              f"{self.world_batch}, lr {self.lr:.3g}{how}, flips {'on' if recipe.flip else 'off'}, "
              f"{plan.data.workers} loader workers, mixed "
              f"precision {self.amp}", flush=True)
        if plan.recipe.lr is None and self.lr < 1e-4:
            print(f"warning: the learning rate scaled to a total batch of {self.world_batch} is {self.lr:.2g}: "
                  "training will be slow to learn; set --lr (or a larger batch)", flush=True)
        if plan.recipe.flip:
            print("note: clips are flipped left-right at random; classes that depend on direction (SSv2 and the "
                  "like) need --no-flip", flush=True)

    def _print_result(self, metrics: dict, elapsed: float) -> None:
        out_dir = self.plan.run.output_dir
        if not metrics:
            print(f"done in {elapsed:.0f}s; output in {out_dir}", flush=True)
            return
        parts = [f"top-1 {metrics['top1']:.1f}%"]
        if len(self.eval_names) > 5:  # with five classes or fewer, top-5 is 100% by construction
            parts.append(f"top-5 {metrics['top5']:.1f}%")
        parts.append(f"cross-modal {metrics['top1_crossmodal']:.1f}%")
        if metrics.get("top1_visual") is not None:
            parts.append(f"visual {metrics['top1_visual']:.1f}%")
        scored = f"{metrics['videos']} videos"
        if metrics["unreadable"]:
            scored = (f"{metrics['videos']} of {metrics['listed']} listed videos ({metrics['unreadable']} "
                      "unreadable, named in the warnings above)")
        print(f"done in {elapsed:.0f}s: {', '.join(parts)} on {scored} ({self._chance()}); output in {out_dir}",
              flush=True)

    def _chance(self) -> str:
        """Chance accuracy: uniform guessing, and always guessing the most frequent class where that is higher."""
        uniform = 100.0 / len(self.eval_names)
        records = self.plan.data.val or []
        if not records:
            return f"chance {uniform:.1f}%"
        counts = np.bincount([r.label for r in records])
        majority = 100.0 * counts.max() / len(records)
        if majority < uniform + 0.05:
            return f"chance {uniform:.1f}%"
        return f"chance {uniform:.1f}%; {majority:.1f}% by always answering the most frequent class"


def run(plan: Plan) -> dict:
    """Train and/or evaluate as ``plan`` (:func:`m2clip_fast.plan.load_plan`) says."""
    return Trainer(plan).run()
