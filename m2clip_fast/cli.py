"""``python train.py`` / ``m2clip-train``: the command line — its options, each checked before anything runs
(clear errors, exit code 2). The flags become a frozen run plan in :mod:`m2clip_fast.plan` (defaults for real
data and for the built-in demo, a resumed run's own settings, every file they name read once), which
:mod:`m2clip_fast.trainer` runs.

With no ``--train-list`` it runs the built-in default: a small synthetic motion-direction data set
(generated once into a cache folder), the ``tiny`` preset, on the CPU in about a minute.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import sys
from typing import Optional, Sequence

from .config import PRESETS, M2CLIPConfig
from .data import UnreadableData
from .distributed import device_problem
from .plan import Plan, PlanError, load_plan, parse_crop_scale, parse_views
from .protocols import PROTOCOLS
from .trainer import Interrupted, run

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "m2clip_fast")


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
    for add_group in (_data_flags, _model_flags, _optimisation_flags, _run_flags):
        add_group(p)
    return p


def _data_flags(p: argparse.ArgumentParser) -> None:
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


def _model_flags(p: argparse.ArgumentParser) -> None:
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


def _optimisation_flags(p: argparse.ArgumentParser) -> None:
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


def _run_flags(p: argparse.ArgumentParser) -> None:
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
    r.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                   help="issue every kernel from Python instead of replaying each step from a CUDA graph (debugging)")
    r.add_argument("--device", default="auto", help="'auto' (a GPU if there is one), 'cpu', 'cuda' or 'cuda:N'")
    r.add_argument("--cache-dir", default=DEFAULT_CACHE, help="where the demo data set is generated")


def parse_args(argv: Optional[Sequence[str]] = None) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    """Parse and check the flags themselves (ranges, device, formats, combinations; clear errors, exit code 2).
    What they name is read by :func:`m2clip_fast.plan.load_plan`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.zero_shot:
        if not args.resume:
            parser.error("--zero-shot evaluates a trained model: give --resume CHECKPOINT")
        if not args.data_root:
            parser.error(f"--zero-shot {args.zero_shot}: give --data-root, the folder of the {args.zero_shot} videos")
        args.eval_only = True
    problem = device_problem(args.device)
    if problem:
        parser.error(problem)
    _check_ranges(args, parser)
    if args.resume not in (None, "auto") and not os.path.isfile(args.resume):
        parser.error(f"--resume: checkpoint not found: {args.resume}"
                     + (" (that is a folder: give the checkpoint file, or --resume auto --output-dir FOLDER)"
                        if os.path.isdir(args.resume) else ""))
    if args.init_from and args.resume:
        parser.error("--init-from starts a new run; --resume continues one: give one of them")
    try:  # formats checked now; the plan parses them again after a checkpoint's settings are merged in
        if args.views is not None:
            parse_views("--views", args.views)
        parse_views("--quick-views", args.quick_views)
        parse_crop_scale(args.crop_scale)
    except PlanError as err:
        parser.error(str(err))
    if args.randaugment not in (None, "torchvision"):
        try:
            from timm.data.auto_augment import rand_augment_transform

            rand_augment_transform(args.randaugment, {})
        except Exception as err:  # timm's own message for a bad config string
            parser.error(f"--randaugment {args.randaugment!r} is not a timm RandAugment config ({err})")
    for name in ("num_frames", "sampling_rate", "batch_size", "grad_accum", "epochs", "log_interval", "eval_every"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    try:
        args.config_overrides = parse_config_sets(args.set)
    except (ValueError, TypeError) as err:
        parser.error(f"--set: {err}")
    if args.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            parser.error("--tensorboard needs the tensorboard package: pip install tensorboard")
    return args, parser


def resolve(argv: Optional[Sequence[str]] = None) -> Plan:
    """The flags -> the run's plan (:func:`m2clip_fast.plan.load_plan`); any problem is one line, exit code 2."""
    args, parser = parse_args(argv)
    try:
        return load_plan(args)
    except PlanError as err:
        parser.error(str(err))


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    plan = resolve(argv)
    try:
        run(plan)
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
