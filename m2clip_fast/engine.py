"""The training epoch and multi-view evaluation."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data import UnreadableData
from .data.device import device_batches
from .distributed import Runtime, all_reduce_sum, available_cpus
from .graphs import GraphedCall
from .model import M2CLIP
from .prompts import Prompts
from .run_state import Optimisation

LOSS_NAMES = ("total", "contrastive", "crossmodal", "visual", "mlm")


_NOTED: set[str] = set()  # the notes this process has printed: each is said once, not every epoch


def note_once(key: str, text: str) -> None:
    """Print a note above the progress bar, once per process for each ``key``."""
    if key not in _NOTED:
        _NOTED.add(key)
        tqdm.write(f"note: {text}")


@dataclass
class DataReport:
    """What a pass over a data set found: the distinct unreadable videos (with why) and the short ones."""

    unreadable: set[str] = field(default_factory=set)
    short: set[str] = field(default_factory=set)

    def add(self, batch: dict, what: str) -> None:
        """Take a batch's reports; a video seen unreadable for the first time is named above the progress bar."""
        for lines in batch["unreadable"]:
            for line in filter(None, lines.split("\n")):
                if line not in self.unreadable:
                    tqdm.write(f"{what} {line}")
                self.unreadable.add(line)
        self.short.update(filter(None, batch["short"]))

    def note_short(self) -> None:
        if self.short:
            first = min(self.short)
            more = f" (and {len(self.short) - 1} more video{'s' * (len(self.short) > 2)} like it)" \
                if len(self.short) > 1 else ""
            note_once(f"short:{first}", f"{first}{more}")


@dataclass
class EpochResult:
    """Where an epoch ended: the global ``step``, ``replaced`` (unreadable draws replaced by another video),
    ``stopped_at`` (batches done, or -1 when the epoch ran to its end) and what its data held."""

    step: int
    replaced: int
    stopped_at: int
    data: DataReport


@dataclass(frozen=True)
class TrainStep:
    """What a training step runs: the model (DDP-wrapped or not), the class prompts with their MLM masker, the
    optimisation state, the autocast context factory, where it runs and whether it is replayed from CUDA graphs."""

    model: torch.nn.Module
    prompts: Prompts
    optim: Optimisation
    autocast: Callable[[], contextlib.AbstractContextManager]
    runtime: Runtime
    graphs: bool = False  # replay the steps from CUDA graphs (graphs.capture_plan decides)


@dataclass(frozen=True)
class StepSettings:
    grad_accum: int
    clip_grad: float  # gradient-norm clipping, 0: off
    mask_rate: float  # share of class-name words masked for the MLM head
    seed: int
    log_interval: int  # optimizer steps between log rows (the loop's only host-device sync)


class _LogWindow:
    """Loss sums kept on the device between log points (no sync per step), and the host time spent waiting
    for data, turned into one ``metrics.jsonl`` row every ``log_interval`` steps."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(len(LOSS_NAMES), device=device)
        self.reset()

    def reset(self) -> None:
        self.sums.zero_()
        self.batches, self.waited, self.start = 0, 0.0, time.perf_counter()

    def add(self, losses: dict) -> None:
        self.sums += torch.stack([losses[k].detach().float() for k in LOSS_NAMES])
        self.batches += 1

    def row(self, clips: int, runtime: Runtime) -> dict:
        """Means over the window, clips/s and ``data_wait`` (the share of the window the loop waited for data:
        near 1, the loader is the bottleneck)."""
        elapsed = time.perf_counter() - self.start
        row = dict(zip(LOSS_NAMES, (self.sums / self.batches).tolist()))
        row.update(batches=self.batches, clips_per_s=self.batches * clips * runtime.world_size / elapsed,
                   data_wait=min(1.0, self.waited / elapsed))
        if runtime.device.type == "cuda":
            row["peak_mem_gb"] = torch.cuda.max_memory_allocated(runtime.device) / 1e9
        return row


def _note_slow_data(row: dict, workers: int) -> None:
    if row["data_wait"] > 0.5:
        more = "more --workers, or " if workers < available_cpus() else f"all {available_cpus()} CPUs already decode: "
        note_once("data_wait", f"{100 * row['data_wait']:.0f}% of the last {row['batches']} steps went to waiting for "
                  f"video: the data loader is the bottleneck ({more}smaller, re-encoded videos: python -m "
                  "m2clip_fast.prepare)")


class StepRunner:
    """The device work of one training micro-batch: forward, scaled backward and, on a step's last micro-batch
    (``update``), gradient clipping, AdamW and the gradients' reset. With ``graphs`` both kinds are
    replayed from CUDA graphs after their warm-up (:class:`~m2clip_fast.graphs.GraphedCall`); the schedule's
    learning rate is a device tensor then (:func:`~m2clip_fast.optim.place_state`). Without, the same code runs
    as it is (the CPU; DDP, whose no_sync runs the accumulating micro-batches)."""

    def __init__(self, run: TrainStep, settings: StepSettings) -> None:
        self.run, self.settings = run, settings
        self.params = [p for p in run.model.parameters() if p.requires_grad]
        self.accumulate = GraphedCall(partial(self._micro_batch, update=False), run.graphs)
        self.update = GraphedCall(partial(self._micro_batch, update=True), run.graphs)

    def __call__(self, video: torch.Tensor, labels: torch.Tensor, mlm_tokens: torch.Tensor, mlm_labels: torch.Tensor,
                 update: bool) -> dict[str, torch.Tensor]:
        """video ``[B, 3, T, S, S]``, labels ``[B]``, mlm_tokens / mlm_labels ``[B, L]``, all on the device ->
        the losses (fp32 scalars; a replayed step's own tensors: read before the next call)."""
        return (self.update if update else self.accumulate)(video, labels, mlm_tokens, mlm_labels)

    def _micro_batch(self, video: torch.Tensor, labels: torch.Tensor, mlm_tokens: torch.Tensor,
                     mlm_labels: torch.Tensor, update: bool) -> dict[str, torch.Tensor]:
        run, optim = self.run, self.run.optim
        no_sync = getattr(run.model, "no_sync", None)
        with (no_sync() if no_sync is not None and not update else contextlib.nullcontext()):
            with run.autocast():
                losses = run.model(video, labels, run.prompts.tokens, mlm_tokens, mlm_labels, run.prompts.prefix)
            optim.scaler.scale(losses["total"] / self.settings.grad_accum).backward()
        if update:
            optim.scaler.unscale_(optim.optimizer)
            if self.settings.clip_grad > 0:  # foreach, as CUDA's default: the trace counts what a GPU runs
                torch.nn.utils.clip_grad_norm_(self.params, self.settings.clip_grad, foreach=True)
            optim.scaler.step(optim.optimizer)
            optim.scaler.update()
            # Accumulating graphs add into gradients that keep their addresses (zeroed here, in place); otherwise the
            # next backward writes fresh ones (a graph's at the addresses it was captured with), with no add or zero.
            optim.optimizer.zero_grad(set_to_none=not (run.graphs and self.settings.grad_accum > 1))
        return losses


def train_one_epoch(run: TrainStep, loader: torch.utils.data.DataLoader, settings: StepSettings, epoch: int,
                    start: tuple[int, int], log: Callable[[dict], None], on_step: Callable[[int, int], bool]
                    ) -> EpochResult:
    """One epoch from ``start = (global step, first batch)``. ``on_step(step, batches_done)`` runs after each
    optimizer step (checkpointing) and returns whether to stop there (``--max-steps``, an interrupt)."""
    step, first_batch = start
    runtime = run.runtime
    run.model.train()
    runner = StepRunner(run, settings)
    window, skipped, data = _LogWindow(runtime.device), 0, DataReport()
    bar = tqdm(loader, desc=f"train {epoch}", disable=not runtime.is_main, dynamic_ncols=True)
    done, ready = first_batch, time.perf_counter()
    # The next batch's copy overlaps this step; flips, RandAugment and the normalisation run on the device.
    for i, (batch, video) in enumerate(device_batches(bar, runtime.device, loader.dataset.device_randaugment)):
        window.waited += time.perf_counter() - ready
        skipped += int(batch["skipped"].sum())
        data.add(batch, "replaced unreadable video")
        masks = torch.Generator().manual_seed(hash((settings.seed, epoch, first_batch + i, runtime.rank)) % 2**62)
        update = (i + 1) % settings.grad_accum == 0 or i == len(loader) - 1
        mlm_tokens, mlm_labels = run.prompts.masker(batch["label"], settings.mask_rate, masks)
        window.add(runner(video, batch["label"].to(runtime.device, non_blocking=True), mlm_tokens.to(runtime.device),
                          mlm_labels.to(runtime.device), update))
        if update:
            run.optim.scheduler.step()  # writes the next rate into the device tensor a replayed step reads
            step += 1
            if step % settings.log_interval == 0:
                row = window.row(video.shape[0], runtime)
                lr = float(run.optim.scheduler.get_last_lr()[0])
                bar.set_postfix(loss=f"{row['total']:.3f}", lr=f"{lr:.2e}")
                # "batches": how many the means cover (fewer than the interval right after a resume)
                log({"split": "train", "epoch": epoch, "step": step, "lr": lr, **row})
                _note_slow_data(row, loader.num_workers)
                window.reset()
            done = first_batch + i + 1
            if on_step(step, done):
                break
        ready = time.perf_counter()
    data.note_short()
    return EpochResult(step, skipped, done if done < first_batch + len(loader) else -1, data)


def class_embeddings(model: M2CLIP, prompts: Prompts, autocast: Callable[[], contextlib.AbstractContextManager]
                     ) -> torch.Tensor:
    """L2-normalised text embeddings of the class prompts ``[K, D]`` (fp32)."""
    with autocast():
        return F.normalize(model.encode_text(prompts.tokens, prompts.prefix).embedding.float(), dim=-1)


def view_probabilities(model: M2CLIP, video: torch.Tensor, class_emb: torch.Tensor,
                       autocast: Callable[[], contextlib.AbstractContextManager], visual_head: bool = True
                       ) -> dict[str, torch.Tensor]:
    """Class probabilities of each clip, averaged over its views: the one scoring rule of evaluation and
    prediction. video ``[B, V, 3, T, S, S]``, class_emb ``[K, D]`` -> ``{"crossmodal"[, "visual", "combined"]:
    [B, K]}`` (the visual head only scores the classes it was trained on)."""
    b, v = video.shape[:2]
    with autocast():
        vf = model.encode_video(video.flatten(0, 1))
    emb = F.normalize(vf.embedding.float(), dim=-1)
    probs = {"crossmodal": (model.cfg.crossmodal_scale * emb @ class_emb.t()).softmax(-1).view(b, v, -1).mean(1)}
    if visual_head:
        probs["visual"] = vf.class_logits.float().softmax(-1).view(b, v, -1).mean(1)
        probs["combined"] = (probs["crossmodal"] + probs["visual"]) / 2
    return probs


@torch.no_grad()
def evaluate(
    model: M2CLIP,
    loader: torch.utils.data.DataLoader,
    prompts: Prompts,
    autocast: Callable[[], contextlib.AbstractContextManager],
    runtime: Runtime,
    visual_head: bool = True,
    desc: str = "eval",
    graphs: bool = False,
) -> dict:
    """Top-1/top-5 of the cross-modal head, the visual head and their combination (mean of the two
    probability maps), each averaged over a video's views (:func:`view_probabilities`), summed over ranks.
    ``visual_head=False`` (zero-shot on other classes): cross-modal only, and ``top1``/``top5`` are the
    cross-modal ones. With ``graphs`` the batches of a common shape are scored by a replayed CUDA graph.

    Unreadable videos (the dataset marks them) are excluded and counted: ``videos`` were scored out of
    ``listed``, ``unreadable`` were not. More than half of the list unreadable stops with an error."""
    model.eval()
    class_emb = class_embeddings(model, prompts, autocast)
    heads = ("crossmodal", "visual", "combined") if visual_head else ("crossmodal",)
    k5 = min(5, class_emb.shape[0])
    sums = torch.zeros(len(heads) * 2 + 3, dtype=torch.float64, device=runtime.device)
    score = GraphedCall(partial(view_probabilities, model, class_emb=class_emb, autocast=autocast,
                                visual_head=visual_head), graphs)
    data = DataReport()
    bar = tqdm(loader, desc=desc, disable=not runtime.is_main, dynamic_ncols=True)
    for batch, views in device_batches(bar, runtime.device):  # views [B, V, 3, T, S, S]
        readable = batch["readable"]
        sums[-1] += int((~readable).sum())
        data.add(batch, "not scoring unreadable video")
        if not readable.any():
            continue
        video = views if readable.all() else views[readable.to(runtime.device)]
        labels = batch["label"][readable].to(runtime.device)
        probs = score(video)
        for j, head in enumerate(heads):
            top = probs[head].topk(k5, dim=-1).indices
            sums[2 * j] += (top[:, 0] == labels).sum()
            sums[2 * j + 1] += (top == labels[:, None]).any(-1).sum()
        sums[-2] += video.shape[0]
    all_reduce_sum(sums, runtime)
    if runtime.is_main:
        data.note_short()
    scored, unreadable = int(sums[-2].item()), int(sums[-1].item())
    if unreadable > scored:
        raise UnreadableData(f"{unreadable} of {scored + unreadable} evaluation videos are unreadable (each is named in "
                             "the warnings above): check --data-root and the list file")
    n = max(scored, 1)
    metrics = {f"top{k}_{head}": 100.0 * sums[2 * j + (k == 5)].item() / n for j, head in enumerate(heads) for k in (1, 5)}
    best = "combined" if visual_head else "crossmodal"
    metrics.update(top1=metrics[f"top1_{best}"], top5=metrics[f"top5_{best}"], videos=scored,
                   listed=scored + unreadable, unreadable=unreadable)
    if not visual_head:
        metrics.update(top1_visual=None, top5_visual=None)
    return metrics
