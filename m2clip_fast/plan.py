"""The run plan: what ``train.py``'s flags (:mod:`m2clip_fast.cli`) become once everything they name is loaded —
the checkpoint to resume or start from, its saved settings, the class and video lists, the CLIP weights — and
checked, as frozen dataclasses. :class:`~m2clip_fast.trainer.Trainer` runs a :class:`Plan` and never changes it.

:func:`load_plan` is the one place that reads files for a run; what it cannot use raises :class:`PlanError`
with one line naming the input, what was wrong and what to do.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from . import run_state
from .config import PRESETS, M2CLIPConfig
from .data import VideoRecord, make_synthetic_dataset, read_class_names, read_video_list
from .distributed import available_cpus
from .factory import resolve_pretrained
from .protocols import PROTOCOLS

# The built-in default run (no --train-list): what each unset option becomes.
COMMON_DEFAULTS = dict(sampling="dense", randaugment=None, crop_scale=None, interpolation="bilinear", grad_accum=1,
                       base_lr=1e-3, weight_decay=1e-2, clip_grad=1.0, amp="auto", seed=0, mlm_mask_rate=0.2,
                       crossmodal_loss="released")
SYNTHETIC_DEFAULTS = dict(COMMON_DEFAULTS, preset="tiny", num_frames=8, sampling_rate=2, batch_size=16, epochs=20,
                          warmup_epochs=1, lr=2e-3, output_dir="runs/synthetic", views="1x1", flip=False, workers=2)
REAL_DEFAULTS = dict(COMMON_DEFAULTS, preset="vit-b16-k400", num_frames=8, sampling_rate=16, batch_size=8, epochs=12,
                     warmup_epochs=2, lr=None, output_dir="runs/m2clip", views="4x3", flip=True, workers=4)
# Training-recipe defaults that come with a preset on real data (the released scripts'); flags override them.
PRESET_RECIPES = {
    "vit-b16-ssv2": dict(crop_scale="0.08,1", randaugment="rand-m7-n4-mstd0.5-inc1", interpolation="bicubic",
                         flip=False),
}


class PlanError(ValueError):
    """A flag, or a file it names, that the run cannot use (the message says which and what to do)."""


@dataclass(frozen=True)
class ClipSettings:
    """How clips are sampled and scored. Saved in checkpoints; ``--eval-only`` takes them from the checkpoint."""

    num_frames: int
    sampling_rate: int
    sampling: str
    views: str  # "SxT": spatial crops x temporal clips


@dataclass(frozen=True)
class Recipe:
    """The rest of what defines a training run. Saved in checkpoints; a resumed run continues with it."""

    flip: bool
    randaugment: Optional[str]  # None, "torchvision" or a timm config string
    crop_scale: Optional[str]  # "LOW,HIGH" of random-resized crops, or None: short-side jitter
    interpolation: str
    batch_size: int
    grad_accum: int
    epochs: int
    warmup_epochs: float
    lr: Optional[float]  # None: base_lr x total batch / 256
    base_lr: float
    weight_decay: float
    clip_grad: float
    amp: str
    seed: int
    mlm_mask_rate: float
    crossmodal_loss: str


SAVED = (ClipSettings, Recipe)  # the settings a checkpoint stores, flat, beside the model's preset


def saved_settings(clip: ClipSettings, recipe: Recipe, preset: Optional[str]) -> dict[str, Any]:
    """What a checkpoint stores of its run (read back by :func:`load_plan`)."""
    return {**dataclasses.asdict(clip), **dataclasses.asdict(recipe), "preset": preset}


def _field_names(*classes) -> tuple[str, ...]:
    return tuple(f.name for cls in classes for f in dataclasses.fields(cls))


@dataclass(frozen=True)
class DataPlan:
    clip: ClipSettings
    class_names: tuple[str, ...]
    eval_class_names: Optional[tuple[str, ...]]  # zero-shot evaluation against other classes
    train: Optional[tuple[VideoRecord, ...]]
    val: Optional[tuple[VideoRecord, ...]]
    zero_shot: Optional[str]  # a protocol of m2clip_fast.protocols
    zero_shot_splits: Optional[tuple]
    views: tuple[int, int]  # (spatial, temporal) of the final evaluation
    quick_views: tuple[int, int]  # of validation during training
    crop_range: Optional[tuple[float, float]]
    workers: int


@dataclass(frozen=True)
class ModelPlan:
    preset: str
    saved_preset: Optional[str]  # the preset a resumed or transferred checkpoint names (None for older ones)
    overrides: Mapping[str, Any]  # --set
    pretrained: Optional[str]  # a local weights file, or None (a random backbone, or the checkpoint's own)
    backend: str  # "fused" or "eager"
    grad_checkpointing: bool
    checkpoint: Optional[dict]  # --resume's, loaded once
    init_checkpoint: Optional[dict]  # --init-from's, loaded once
    init_from: Optional[str]


@dataclass(frozen=True)
class RunPlan:
    output_dir: str
    resume_path: Optional[str]
    eval_only: bool
    max_steps: Optional[int]
    save_every: int
    log_interval: int
    eval_every: int
    tensorboard: bool
    device: str
    cuda_graphs: bool  # replay steps from CUDA graphs where the run allows (graphs.capture_plan)
    changes: tuple[tuple[str, Any, Any], ...]  # (flag, the run's value, the given one): applied and announced


@dataclass(frozen=True)
class Plan:
    data: DataPlan
    model: ModelPlan
    recipe: Recipe
    run: RunPlan


def load_plan(args: argparse.Namespace) -> Plan:
    """Flags (parsed and checked by :func:`m2clip_fast.cli.parse_args`) -> the plan: the checkpoint first (a
    resumed or evaluated run's own settings come before the mode's defaults), then defaults, files and weights.
    ``args`` is left as it is."""
    a = argparse.Namespace(**vars(args))
    a.synthetic = a.train_list is None and not a.eval_only
    defaults = SYNTHETIC_DEFAULTS if a.synthetic else REAL_DEFAULTS
    if not a.synthetic and a.preset in PRESET_RECIPES:  # the released training recipe of this preset
        defaults = {**defaults, **PRESET_RECIPES[a.preset]}
    workers_given = a.workers is not None
    if a.output_dir is None and a.eval_only and a.resume not in (None, "auto"):
        a.output_dir = os.path.dirname(os.path.abspath(a.resume))  # evaluation metrics go beside the run's
    a.output_dir = a.output_dir or defaults["output_dir"]
    checkpoint, init_checkpoint, resume_path = _checkpoints(a)
    saved_preset = _check_preset(a, checkpoint, init_checkpoint, resume_path)
    changes = _apply_saved(a, checkpoint, resume_path)
    for key, value in defaults.items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    if checkpoint is None and init_checkpoint is None:
        saved_preset = a.preset  # a new model: saved in its checkpoints' settings
    if not workers_given:  # by default no more workers than CPUs this process may use
        a.workers = min(a.workers, available_cpus())
    if a.synthetic:
        paths = make_synthetic_dataset(os.path.join(a.cache_dir, "synthetic-v2"))
        a.train_list, a.val_list, a.classes, a.data_root = paths.train_list, paths.val_list, paths.classes_csv, paths.root
    _check_files(a)
    views, quick_views = parse_views("--views", a.views), parse_views("--quick-views", a.quick_views)
    if a.config_overrides and checkpoint is not None:
        raise PlanError("--set: a resumed or evaluated run keeps its checkpoint's model config; start a new run")
    if a.config_overrides and init_checkpoint is not None:
        raise PlanError("--set with --init-from: the model config is the source run's")
    if a.config_overrides:
        try:
            M2CLIPConfig.preset(a.preset, **a.config_overrides)  # validated now, not after data loading
        except (ValueError, TypeError) as err:
            raise PlanError(f"--set: {err}") from None
    clip = ClipSettings(**{k: getattr(a, k) for k in _field_names(ClipSettings)})
    data = _data_plan(a, clip, checkpoint, views, quick_views)
    pretrained = _pretrained(a, checkpoint or init_checkpoint)  # last: fetching weights may take a while
    recipe = Recipe(**{k: getattr(a, k) for k in _field_names(Recipe)})
    model = ModelPlan(a.preset, saved_preset, dict(a.config_overrides), pretrained,
                      "fused" if a.use_fused else "eager", a.grad_checkpointing, checkpoint, init_checkpoint,
                      a.init_from)
    run = RunPlan(a.output_dir, resume_path, a.eval_only, a.max_steps, a.save_every, a.log_interval, a.eval_every,
                  a.tensorboard, a.device, a.cuda_graphs, tuple(changes))
    return Plan(data, model, recipe, run)


def parse_views(flag: str, text: str) -> tuple[int, int]:
    """``"4x3"`` -> (4, 3): spatial crops x temporal clips."""
    try:
        spatial, temporal = (int(v) for v in str(text).lower().split("x"))
        if spatial >= 1 and temporal >= 1:
            return spatial, temporal
    except ValueError:
        pass
    raise PlanError(f"{flag} must look like 4x3 (spatial x temporal), got {text!r}")


def parse_crop_scale(text: Optional[str]) -> Optional[tuple[float, float]]:
    """``"0.08,1"`` -> (0.08, 1.0); None stays None."""
    if text is None:
        return None
    try:
        low, high = (float(v) for v in str(text).split(","))
        if 0 < low <= high <= 1:
            return low, high
    except ValueError:
        pass
    raise PlanError(f"--crop-scale must be LOW,HIGH with 0 < LOW <= HIGH <= 1, got {text!r}")


def _checkpoints(a: argparse.Namespace) -> tuple[Optional[dict], Optional[dict], Optional[str]]:
    """(--resume's checkpoint, --init-from's, the path resumed from), each loaded once."""
    resume_path = run_state.latest(a.output_dir) if a.resume == "auto" else a.resume
    if a.resume == "auto" and resume_path is None:
        if a.eval_only:
            raise PlanError(f"--eval-only --resume auto: {a.output_dir} holds no checkpoint ({run_state.LATEST}); "
                            "give the run's --output-dir, or --resume with a checkpoint file")
        print(f"note: --resume auto: no checkpoint in {a.output_dir}; starting a new run", flush=True)
    try:
        checkpoint = run_state.load(resume_path) if resume_path else None
    except (ValueError, FileNotFoundError) as err:
        raise PlanError(f"--resume: {err}") from None
    try:
        init_checkpoint = run_state.load(a.init_from) if a.init_from else None
    except (ValueError, FileNotFoundError) as err:
        raise PlanError(f"--init-from: {err}") from None
    return checkpoint, init_checkpoint, resume_path


def _check_preset(a: argparse.Namespace, checkpoint: Optional[dict], init_checkpoint: Optional[dict],
                  resume_path: Optional[str]) -> Optional[str]:
    """A resumed, evaluated or transferred run's model is its checkpoint's: a --preset that names another is
    refused (not silently ignored). Checkpoints from before presets were saved are compared by backbone.
    -> the checkpoint's preset (None where it names none)."""
    source, flag, path = ((checkpoint, "--resume", resume_path) if checkpoint is not None
                          else (init_checkpoint, "--init-from", a.init_from))
    if source is None:
        return None
    saved = (source.get("settings") or {}).get("preset")
    if a.preset is not None:
        same = saved == a.preset if saved else PRESETS[a.preset]["backbone"] == source["config"]["backbone"]
        if not same:
            model = f"preset {saved}" if saved else f"backbone {source['config']['backbone']}"
            raise PlanError(f"--preset {a.preset}: {flag} {path} is a model of {model}, and the run keeps its "
                            "checkpoint's model; drop --preset, or start a new run in another --output-dir")
    return saved


def _apply_saved(a: argparse.Namespace, checkpoint: Optional[dict], resume_path: Optional[str]) -> list:
    """Fill unset settings from the checkpoint's (all of them to resume training, the clip settings for
    --eval-only). Returns the flags that differ from the checkpoint's run as (name, run's, given); to resume
    training they are refused unless --allow-changes."""
    saved = (checkpoint or {}).get("settings") or {}
    keys = _field_names(ClipSettings) if a.eval_only else _field_names(*SAVED)
    given = {k: getattr(a, k) for k in keys if k in saved and getattr(a, k) is not None}
    changes = [(k, saved[k], v) for k, v in given.items() if str(v).lower() != str(saved[k]).lower()]
    if changes and not a.eval_only and not a.allow_changes:
        listed = "; ".join(f"--{k.replace('_', '-')} {new} (the run used {'the default' if old is None else old})"
                           for k, old, new in changes)
        raise PlanError(f"--resume continues the run in {resume_path} with its own settings, but {listed}: drop the "
                        "flag, or pass --allow-changes to apply it")
    for k in keys:
        if getattr(a, k) is None and k in saved:
            setattr(a, k, saved[k])
    return changes


def _check_files(a: argparse.Namespace) -> None:
    if a.train_list is None and a.val_list is None and not a.zero_shot:
        raise PlanError("give --train-list (training) or --val-list (with --eval-only)")
    for name in ("train_list", "val_list", "classes", "eval_classes"):
        path = getattr(a, name)
        if path is not None and not os.path.isfile(path):
            raise PlanError(f"--{name.replace('_', '-')}: file not found: {path}")
    if a.data_root and not os.path.isdir(a.data_root):
        raise PlanError(f"--data-root: folder not found: {a.data_root}")
    check_output_dir(a.output_dir)


def check_output_dir(folder: str) -> None:
    """The output folder exists or can be made, and files can be written in it — checked now, not after an epoch."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise PlanError(f"--output-dir {folder} is a file, not a folder: give a folder for checkpoints and metrics")
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise PlanError(f"--output-dir {folder}: cannot write there ({err.strerror or err}); give a writable "
                        "folder") from None


def _data_plan(a: argparse.Namespace, clip: ClipSettings, checkpoint: Optional[dict], views: tuple[int, int],
               quick_views: tuple[int, int]) -> DataPlan:
    """Classes and video lists, read and checked."""
    if a.classes is None and checkpoint is None:
        raise PlanError("--classes is required (or --resume a checkpoint, whose classes are used)")
    try:
        class_names = read_class_names(a.classes) if a.classes else list(checkpoint["class_names"])
        eval_class_names = read_class_names(a.eval_classes) if a.eval_classes else None
        eval_k = len(eval_class_names or class_names)
        train = _read_videos(a.train_list, a.data_root, len(class_names)) if a.train_list and not a.eval_only else None
        val = _read_videos(a.val_list, a.data_root, eval_k) if a.val_list else None
        splits = _zero_shot_splits(a.zero_shot, a.data_root, a.split_dir) if a.zero_shot else None
    except FileNotFoundError as err:
        raise PlanError(str(err)) from None
    except PlanError:
        raise
    except ValueError as err:
        raise PlanError(str(err)) from None
    return DataPlan(clip, tuple(class_names), tuple(eval_class_names) if eval_class_names else None,
                    tuple(train) if train else None, tuple(val) if val else None, a.zero_shot,
                    tuple(splits) if splits else None, views, quick_views, parse_crop_scale(a.crop_scale), a.workers)


def _zero_shot_splits(protocol_name: str, data_root: str, split_dir: Optional[str]) -> list:
    """The protocol's three splits, their videos checked up front on a sample."""
    protocol = PROTOCOLS[protocol_name]
    splits = [protocol.split(n, data_root, split_dir) for n in (1, 2, 3)]
    for split in splits:
        sample = split.records[:: max(1, len(split.records) // 16)][:16]
        if not any(os.path.exists(r.path) for r in sample):
            raise PlanError(f"--zero-shot {protocol_name}: none of {len(sample)} sampled videos of {split.name} exist "
                            f"under --data-root {data_root} (e.g. {sample[0].path})")
    return splits


def _read_videos(list_file: str, root: str, num_classes: int) -> list:
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
    raise PlanError(f"{list_file}: none of {len(sample)} sampled videos exist (e.g. {sample[0].path}); give "
                    "--data-root, the folder the list's paths are relative to")


def _pretrained(a: argparse.Namespace, source: Optional[dict]) -> Optional[str]:
    """--pretrained as a local file (an open_clip tag is fetched or found in its cache now). A fresh run of a
    CLIP preset on real data needs CLIP weights: adapting a randomly initialised backbone learns nothing useful,
    so it is refused unless asked for by name (``--pretrained random``: benchmarks, smoke tests)."""
    backbone = source["config"]["backbone"] if source else PRESETS[a.preset]["backbone"]
    if a.pretrained == "random":
        if source is None:
            print("note: --pretrained random: the frozen backbone is randomly initialised (a benchmark or smoke "
                  "test: it learns nothing useful), and every checkpoint stores all of it", flush=True)
        return None
    if a.pretrained is not None:
        try:
            return resolve_pretrained(backbone, a.pretrained)
        except (ValueError, FileNotFoundError) as err:
            raise PlanError(f"--pretrained: {err}") from None
    if source is None and not a.synthetic:
        if isinstance(backbone, str):
            raise PlanError(f"--preset {a.preset} adapts a pretrained CLIP, and no --pretrained was given: give "
                            "--pretrained openai (fetched once and cached by open_clip) or a local weights file; "
                            "--pretrained random trains on a random backbone on purpose")
        print(f"note: preset {a.preset} has no pretrained weights: its backbone is randomly initialised (a test "
              "model)", flush=True)
    return None
