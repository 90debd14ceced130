"""``python train.py`` / ``m2clip-train``: the command line — options, their defaults for real data and for
the built-in demo, a resumed run's own settings, and every file and value checked before anything runs
(clear errors, exit code 2). The run itself is :mod:`m2clip_fast.trainer`.

With no ``--train-list`` it runs the built-in default: a small synthetic motion-direction data set
(generated once into a cache folder), the ``tiny`` preset, on the CPU in about a minute.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import sys
import tempfile
from typing import Optional, Sequence

from . import run_state
from .config import PRESETS, M2CLIPConfig
from .data import UnreadableData, make_synthetic_dataset, read_class_names, read_video_list
from .distributed import available_cpus, device_problem
from .factory import resolve_pretrained
from .protocols import PROTOCOLS
from .trainer import Interrupted, run

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "m2clip_fast")
# The built-in default run (no --train-list): what each unset option becomes.
COMMON_DEFAULTS = dict(sampling="dense", randaugment=None, crop_scale=None, interpolation="bilinear", grad_accum=1, base_lr=1e-3, weight_decay=1e-2, clip_grad=1.0,
                       amp="auto", seed=0, mlm_mask_rate=0.2, crossmodal_loss="released")
SYNTHETIC_DEFAULTS = dict(COMMON_DEFAULTS, preset="tiny", num_frames=8, sampling_rate=2, batch_size=16, epochs=20,
                          warmup_epochs=1, lr=2e-3, output_dir="runs/synthetic", views="1x1", flip=False, workers=2)
REAL_DEFAULTS = dict(COMMON_DEFAULTS, preset="vit-b16-k400", num_frames=8, sampling_rate=16, batch_size=8, epochs=12,
                     warmup_epochs=2, lr=None, output_dir="runs/m2clip", views="4x3", flip=True, workers=4)
# Training-recipe defaults that come with a preset on real data (the released scripts'); flags override them.
PRESET_RECIPES = {
    "vit-b16-ssv2": dict(crop_scale="0.08,1", randaugment="rand-m7-n4-mstd0.5-inc1", interpolation="bicubic",
                         flip=False),
}


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
    d.add_argument("--zero-shot", choices=sorted(PROTOCOLS),
                   help="the paper's zero-shot protocol: evaluate the --resume checkpoint on the three splits of this "
                   "data set (videos under --data-root), per split and mean ± std")
    d.add_argument("--split-dir", help="with --zero-shot hmdb51/ucf101: read the official split files from this "
                   "folder (UCF101 testlist0N.txt; HMDB51 <class>_test_splitN.txt) instead of the shipped lists")
    d.add_argument("--num-frames", type=int, help="frames per clip (T) [8]")
    d.add_argument("--sampling-rate", type=int, help="frame stride of dense sampling [16; demo 2]")
    d.add_argument("--sampling", choices=("dense", "segment"), help="dense clips or TSN segments [dense]")
    d.add_argument("--views", help="test views SxT: spatial crops x temporal clips, scores averaged [4x3; demo 1x1]")
    d.add_argument("--eval-every", type=int, default=1, help="validate every N epochs during training (and after "
                   "the last)")
    d.add_argument("--quick-views", default="1x1", help="test views for validation during training; the full "
                   "--views evaluate the finished model (and --eval-only)")
    d.add_argument("--no-flip", dest="flip", action="store_false", default=None,
                   help="no horizontal flips (direction-sensitive data such as SSv2; the demo never flips)")
    d.add_argument("--randaugment", nargs="?", const="torchvision", metavar="CONFIG",
                   help="RandAugment, one draw per clip: torchvision's defaults, or a timm config string such as "
                   "rand-m7-n4-mstd0.5-inc1 [off; vit-b16-ssv2: rand-m7-n4-mstd0.5-inc1]")
    d.add_argument("--crop-scale", metavar="LOW,HIGH",
                   help="random-resized crops over this share of the frame's area (e.g. 0.08,1) instead of short-side "
                   "jitter to 224-258 and a random crop [jitter; vit-b16-ssv2: 0.08,1]")
    d.add_argument("--interpolation", choices=("bilinear", "bicubic"),
                   help="resizing filter for training crops [bilinear; vit-b16-ssv2: bicubic]")
    d.add_argument("--workers", type=int, help="DataLoader worker processes per rank [4, or the CPUs this process "
                                                "may use if fewer; demo 2]")
    m = p.add_argument_group("model")
    m.add_argument("--preset", choices=sorted(PRESETS), help="model preset [vit-b16-k400; demo tiny]")
    m.add_argument("--pretrained", help="CLIP weights: a local file (OpenAI .pt archive or open_clip state dict) or an "
                   "open_clip pretrained tag of the preset's backbone (openai, laion2b_s34b_b88k, ...), fetched and "
                   "cached by open_clip; required for a new run of a CLIP preset on real data ('random': a randomly "
                   "initialised backbone, on purpose)")
    m.add_argument("--use-fused", action="store_true", help="fused Triton adapters (CUDA)")
    m.add_argument("--grad-checkpointing", action="store_true",
                   help="recompute each vision block in the backward instead of keeping its activations (less memory: "
                   "bigger batches, ViT-L/14, 16 frames)")
    m.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a model config field for a new run (repeatable; ablations): e.g. "
                   "visual_adapter_positions=attn,mlp  text_adapter_last_blocks=0  adapter_width=192  "
                   "loss_weights.mlm=0  crossmodal_loss=logits. Values are Python literals or plain words")
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
    r.add_argument("--init-from", help="start a new run from another run's checkpoint (transfer to a new label set): its "
                   "model config, backbone and every weight that still fits; heads sized by the classes start afresh")
    r.add_argument("--allow-changes", action="store_true",
                   help="let flags change a resumed run's settings (each change is announced)")
    r.add_argument("--eval-only", action="store_true", help="only evaluate (the --resume checkpoint, or the fresh model)")
    r.add_argument("--save-every", type=int, default=0, help="also checkpoint every N optimizer steps (0: per epoch)")
    r.add_argument("--log-interval", type=int, default=10, help="optimizer steps between train log points")
    r.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard in --output-dir/tensorboard "
                   "(needs the tensorboard package: pip install 'm2clip-fast[tensorboard]')")
    r.add_argument("--seed", type=int, help="random seed [0]")
    r.add_argument("--device", default="auto", help="'auto' (a GPU if there is one), 'cpu', 'cuda' or 'cuda:N'")
    r.add_argument("--cache-dir", default=DEFAULT_CACHE, help="where the demo data set is generated")
    return p


def resolve_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse, fill mode-dependent defaults, and check files and values (clear errors, exit code 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.zero_shot:
        if not args.resume:
            parser.error("--zero-shot evaluates a trained model: give --resume CHECKPOINT")
        if not args.data_root:
            parser.error(f"--zero-shot {args.zero_shot}: give --data-root, the folder of the {args.zero_shot} videos")
        args.eval_only = True
    args.synthetic = args.train_list is None and args.eval_only is False
    defaults = SYNTHETIC_DEFAULTS if args.synthetic else REAL_DEFAULTS
    if not args.synthetic and args.preset in PRESET_RECIPES:  # the released training recipe of this preset
        defaults = {**defaults, **PRESET_RECIPES[args.preset]}
    workers_given = args.workers is not None
    _check_device(args.device, parser)
    _check_ranges(args, parser)
    # The checkpoint first: a resumed (or evaluated) run's own settings come before the mode's defaults.
    if args.resume not in (None, "auto") and not os.path.isfile(args.resume):
        parser.error(f"--resume: checkpoint not found: {args.resume}"
                     + (" (that is a folder: give the checkpoint file, or --resume auto --output-dir FOLDER)"
                        if os.path.isdir(args.resume) else ""))
    if args.output_dir is None and args.eval_only and args.resume not in (None, "auto"):
        args.output_dir = os.path.dirname(os.path.abspath(args.resume))  # evaluation metrics go beside the run's
    args.output_dir = args.output_dir or defaults["output_dir"]
    args.resume_path = run_state.latest(args.output_dir) if args.resume == "auto" else args.resume
    if args.resume == "auto" and args.resume_path is None:
        if args.eval_only:
            parser.error(f"--eval-only --resume auto: {args.output_dir} holds no checkpoint ({run_state.LATEST}); "
                         "give the run's --output-dir, or --resume with a checkpoint file")
        print(f"note: --resume auto: no checkpoint in {args.output_dir}; starting a new run", flush=True)
    try:
        args.checkpoint = run_state.load(args.resume_path) if args.resume_path else None
    except ValueError as err:
        parser.error(f"--resume: {err}")
    args.init_checkpoint = None
    if args.init_from:
        if args.resume:
            parser.error("--init-from starts a new run; --resume continues one: give one of them")
        try:
            args.init_checkpoint = run_state.load(args.init_from)
        except (ValueError, FileNotFoundError) as err:
            parser.error(f"--init-from: {err}")
    _check_preset(args, parser)
    args.changes = _apply_saved(args, parser)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.checkpoint is None and args.init_checkpoint is None:
        args.model_preset = args.preset  # a new model: saved in its checkpoints' settings
    if not workers_given:  # by default no more workers than CPUs this process may use
        args.workers = min(args.workers, available_cpus())
    if args.synthetic:
        paths = make_synthetic_dataset(os.path.join(args.cache_dir, "synthetic-v2"))
        args.train_list, args.val_list, args.classes, args.data_root = (
            paths.train_list, paths.val_list, paths.classes_csv, paths.root)
    if args.train_list is None and args.val_list is None and not args.zero_shot:
        parser.error("give --train-list (training) or --val-list (with --eval-only)")
    for name in ("train_list", "val_list", "classes", "eval_classes"):
        path = getattr(args, name)
        if path is not None and not os.path.isfile(path):
            parser.error(f"--{name.replace('_', '-')}: file not found: {path}")
    if args.data_root and not os.path.isdir(args.data_root):
        parser.error(f"--data-root: folder not found: {args.data_root}")
    _check_output_dir(args.output_dir, parser)
    args.spatial_views, args.temporal_views = _views("--views", args.views, parser)
    args.crop_range = None
    if args.crop_scale is not None:
        try:
            low, high = (float(v) for v in str(args.crop_scale).split(","))
            assert 0 < low <= high <= 1
        except (ValueError, AssertionError):
            parser.error(f"--crop-scale must be LOW,HIGH with 0 < LOW <= HIGH <= 1, got {args.crop_scale!r}")
        args.crop_range = (low, high)
    if args.randaugment not in (None, "torchvision"):
        try:
            from timm.data.auto_augment import rand_augment_transform

            rand_augment_transform(args.randaugment, {})
        except Exception as err:  # timm's own message for a bad config string
            parser.error(f"--randaugment {args.randaugment!r} is not a timm RandAugment config ({err})")
    args.quick_spatial_views, args.quick_temporal_views = _views("--quick-views", args.quick_views, parser)
    for name in ("num_frames", "sampling_rate", "batch_size", "grad_accum", "epochs", "log_interval", "eval_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    try:
        args.config_overrides = parse_config_sets(args.set)
        if args.config_overrides:
            if args.checkpoint is not None:
                raise ValueError("a resumed or evaluated run keeps its checkpoint's model config; start a new run")
            M2CLIPConfig.preset(args.preset, **args.config_overrides)  # validated now, not after data loading
    except (ValueError, TypeError) as err:
        parser.error(f"--set: {err}")
    if args.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            parser.error("--tensorboard needs the tensorboard package: pip install tensorboard")
    if args.init_from and args.config_overrides:
        parser.error("--set with --init-from: the model config is the source run's")
    if args.classes is None and args.checkpoint is None:
        parser.error("--classes is required (or --resume a checkpoint, whose classes are used)")
    try:
        args.class_names = read_class_names(args.classes) if args.classes else list(args.checkpoint["class_names"])
        args.eval_class_names = read_class_names(args.eval_classes) if args.eval_classes else None
        eval_k = len(args.eval_class_names or args.class_names)
        args.train_records = _read_videos(args.train_list, args.data_root, len(args.class_names), parser) \
            if args.train_list and not args.eval_only else None
        args.val_records = _read_videos(args.val_list, args.data_root, eval_k, parser) if args.val_list else None
        args.zero_shot_splits = _zero_shot_splits(args, parser) if args.zero_shot else None
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    _check_pretrained(args, parser)  # last: fetching weights may take a while, the cheap checks come first
    return args


# Flags with a range: (flag's attribute, the lowest value it takes, whether that value is excluded). Checked
# before anything is loaded; unset flags (None) take defaults that are in range.
FLAG_RANGES = (("lr", 0, True), ("base_lr", 0, True), ("weight_decay", 0, False), ("warmup_epochs", 0, False),
               ("clip_grad", 0, False), ("save_every", 0, False), ("max_steps", 1, False), ("workers", 0, False),
               ("mlm_mask_rate", 0, False), ("seed", 0, False))


def _check_ranges(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    for name, low, strict in FLAG_RANGES:
        value = getattr(args, name)
        if value is not None and (value <= low if strict else value < low):
            parser.error(f"--{name.replace('_', '-')} must be {'>' if strict else '>='} {low}, got {value:g}"
                         + (" (0 would train nothing)" if name in ("lr", "base_lr", "max_steps") and value == 0 else ""))
    if args.mlm_mask_rate is not None and args.mlm_mask_rate > 1:
        parser.error(f"--mlm-mask-rate is a share of the words, from 0 to 1, got {args.mlm_mask_rate:g}")


def _check_device(device: str, parser: argparse.ArgumentParser) -> None:
    problem = device_problem(device)
    if problem:
        parser.error(problem)


def _check_output_dir(folder: str, parser: argparse.ArgumentParser) -> None:
    """The output folder exists or can be made, and files can be written in it — checked now, not after an epoch."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        parser.error(f"--output-dir {folder} is a file, not a folder: give a folder for checkpoints and metrics")
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        parser.error(f"--output-dir {folder}: cannot write there ({err.strerror or err}); give a writable folder")


def _check_preset(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """A resumed, evaluated or transferred run's model is its checkpoint's: a --preset that names another is
    refused (not silently ignored). Checkpoints from before presets were saved are compared by backbone."""
    source, flag = ((args.checkpoint, "--resume") if args.checkpoint is not None
                    else (args.init_checkpoint, "--init-from"))
    args.model_preset = None
    if source is None:
        return
    saved = (source.get("settings") or {}).get("preset")
    args.model_preset = saved
    if args.preset is None:
        return
    same = saved == args.preset if saved else PRESETS[args.preset]["backbone"] == source["config"]["backbone"]
    if not same:
        model = f"preset {saved}" if saved else f"backbone {source['config']['backbone']}"
        parser.error(f"--preset {args.preset}: {flag} {getattr(args, 'resume_path', None) or args.init_from} is a "
                     f"model of {model}, and the run keeps its checkpoint's model; drop --preset, or start a new run "
                     "in another --output-dir")


def _check_pretrained(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Resolve --pretrained to a local file (an open_clip tag is fetched or found in its cache now). A fresh run
    of a CLIP preset on real data needs CLIP weights: adapting a randomly initialised backbone learns nothing
    useful, so it is refused unless asked for by name (``--pretrained random``: benchmarks, smoke tests)."""
    source = args.checkpoint or args.init_checkpoint
    backbone = source["config"]["backbone"] if source else PRESETS[args.preset]["backbone"]
    if args.pretrained == "random":
        args.pretrained = None
        if source is None:
            print("note: --pretrained random: the frozen backbone is randomly initialised (a benchmark or smoke "
                  "test: it learns nothing useful), and every checkpoint stores all of it", flush=True)
        return
    if args.pretrained is not None:
        try:
            args.pretrained = resolve_pretrained(backbone, args.pretrained)
        except (ValueError, FileNotFoundError) as err:
            parser.error(f"--pretrained: {err}")
        return
    if source is not None or args.synthetic:
        return
    if isinstance(backbone, str):
        parser.error(f"--preset {args.preset} adapts a pretrained CLIP, and no --pretrained was given: give "
                     "--pretrained openai (fetched once and cached by open_clip) or a local weights file; "
                     "--pretrained random trains on a random backbone on purpose")
    print(f"note: preset {args.preset} has no pretrained weights: its backbone is randomly initialised (a test "
          "model)", flush=True)


def _zero_shot_splits(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list:
    """The protocol's three splits, their videos checked up front on a sample."""
    protocol = PROTOCOLS[args.zero_shot]
    splits = [protocol.split(n, args.data_root, args.split_dir) for n in (1, 2, 3)]
    for split in splits:
        sample = split.records[:: max(1, len(split.records) // 16)][:16]
        if not any(os.path.exists(r.path) for r in sample):
            parser.error(f"--zero-shot {args.zero_shot}: none of {len(sample)} sampled videos of {split.name} exist "
                         f"under --data-root {args.data_root} (e.g. {sample[0].path})")
    return splits


def _views(flag: str, text: str, parser: argparse.ArgumentParser) -> tuple[int, int]:
    try:
        spatial, temporal = (int(v) for v in str(text).lower().split("x"))
        if spatial >= 1 and temporal >= 1:
            return spatial, temporal
    except ValueError:
        pass
    parser.error(f"{flag} must look like 4x3 (spatial x temporal), got {text!r}")


def parse_config_sets(items: Sequence[str]) -> dict:
    """``["adapter_width=192", "loss_weights.mlm=0", "visual_adapter_positions=attn,mlp"]`` -> config
    overrides. A value is a Python literal if it parses as one, a comma list of words for tuple fields,
    else a string; ``field.key`` sets one entry of a dict field."""
    fields = {f.name: f for f in dataclasses.fields(M2CLIPConfig)}
    defaults = M2CLIPConfig()
    out: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        name, _, sub = key.strip().partition(".")
        if not sep or name not in fields:
            raise ValueError(f"{item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(fields))}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        default = getattr(defaults, name)
        if isinstance(default, tuple) and not isinstance(value, (tuple, list)):
            value = tuple(v.strip() for v in str(value).split(",") if v.strip())
        if sub:
            if not isinstance(default, dict):
                raise ValueError(f"{item!r}: {name} is not a dict field")
            if sub not in default:
                raise ValueError(f"{item!r}: {name} has no key {sub!r}; its keys are {', '.join(default)}")
            _check_type(item, f"{name}.{sub}", default[sub], value)
            out.setdefault(name, dict(default))[sub] = value
        else:
            if not (value is None and "Optional" in str(fields[name].type)):
                _check_type(item, name, default, value)
            out[name] = value
    return out


def _check_type(item: str, name: str, default: object, value: object) -> None:
    """A ``--set`` value must be of its field's kind: a number for a number, true/false for a flag."""
    kinds = {bool: (bool,), int: (int,), float: (int, float)}
    expected = next((k for k in kinds if type(default) is k), None)  # noqa: E721 (bool is an int)
    if expected is None:
        return
    if not isinstance(value, kinds[expected]) or (expected is not bool and isinstance(value, bool)):
        what = {bool: "True or False", int: "an integer", float: "a number"}[expected]
        raise ValueError(f"{item!r}: {name} must be {what}, got {value!r}")


def _apply_saved(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[tuple[str, object, object]]:
    """Fill unset run settings from the checkpoint's (all of them to resume training, the data settings
    for --eval-only). Returns the flags that differ from the checkpoint's run as (name, run's, given); to
    resume training they are refused unless --allow-changes."""
    saved = (args.checkpoint or {}).get("settings") or {}
    keys = run_state.DATA_SETTINGS if args.eval_only else run_state.RUN_SETTINGS
    given = {k: getattr(args, k) for k in keys if k in saved and getattr(args, k) is not None}
    changes = [(k, saved[k], v) for k, v in given.items() if str(v).lower() != str(saved[k]).lower()]
    if changes and not args.eval_only and not args.allow_changes:
        listed = "; ".join(f"--{k.replace('_', '-')} {new} (the run used "
                           f"{'the default' if old is None else old})" for k, old, new in changes)
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = resolve_args(argv)
    try:
        run(args)
    except UnreadableData as err:
        sys.exit(f"train.py: error: {err}")
    except Interrupted as err:  # Ctrl-C in training: saved at the step it stopped
        print(f"train.py: {err}", file=sys.stderr, flush=True)
        return 130
    except KeyboardInterrupt:
        print("train.py: interrupted; the checkpoints in --output-dir are as last saved (--resume auto continues "
              "from the latest)", file=sys.stderr, flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
