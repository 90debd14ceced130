"""The training checkpoint format, in one place: what a checkpoint holds (:func:`training_state`), how it is
written (atomically) and read (safely, ``weights_only=True``), how a run resumes from it
(:func:`restore`), and how its model is rebuilt (:func:`model_from_checkpoint`)."""
from __future__ import annotations

import dataclasses
import os
import pickle
import random
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np
import torch

from .config import M2CLIPConfig
from .factory import build_model, short_reason
from .model import M2CLIP

FORMAT = "m2clip_fast/1"
LATEST = "last.pt"


@dataclass(frozen=True)
class Position:
    """Where a run stands: finished epochs, optimizer steps, batches done in the current epoch, the best score."""

    epoch: int = 0
    step: int = 0
    batches_done: int = 0
    best: Optional[float] = None


class Optimisation(NamedTuple):
    """The training state besides the weights: the optimizer, its learning-rate schedule, the fp16 grad scaler."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``: a crash
    mid-write leaves the previous file intact."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load(path: str) -> dict:
    """Load a checkpoint without unpickling arbitrary objects. A file that is not a checkpoint, or that holds
    objects other than tensors and plain data, raises ``ValueError`` with one line saying so (nothing in it
    is run, and nothing suggests turning that safety off)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}" if not os.path.isdir(path)
                                else f"{path} is a folder, not a checkpoint file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if not magic:
        raise ValueError(f"{path} is not a valid checkpoint: the file is empty")
    if magic != b"PK\x03\x04" and magic[:1] != b"\x80":  # torch.save's zip format, or its legacy pickle
        raise ValueError(f"{path} is not a valid checkpoint: not a file torch.save wrote (it starts with "
                         f"{magic!r})")
    try:
        with warnings.catch_warnings():  # torch's notes on odd pickle protocols: the error below says it all
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():  # not a refused global: a broken pickle
            raise ValueError(f"{path} is not a valid checkpoint: its contents are corrupt ({short_reason(err)})"
                             ) from None
        raise ValueError(f"{path} holds objects that are not allowed in a checkpoint (only tensors and plain "
                         "data are loaded); it was refused and nothing in it was run") from None
    except Exception as err:  # truncated or corrupt
        raise ValueError(f"{path} is not a valid checkpoint: the file is truncated or corrupt (torch.load: "
                         f"{short_reason(err, 100)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not an m2clip_fast training checkpoint")
    return ckpt


def latest(output_dir: str) -> Optional[str]:
    path = os.path.join(output_dir, LATEST)
    return path if os.path.isfile(path) else None


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def training_state(model: M2CLIP, optim: Optimisation, class_names: Sequence[str], pretrained: Optional[str],
                   settings: dict, position: Position) -> dict:
    """Everything a run needs to go on exactly where it stopped, and to be evaluated or rebuilt later:
    the model's config and weights, the classes, the optimizer/scheduler/scaler states, the position
    (epoch, step, batches done in the epoch), the best score, the RNG states and the run's settings."""
    return {
        "format": FORMAT, "config": dataclasses.asdict(model.cfg), "class_names": list(class_names),
        "pretrained": os.path.abspath(pretrained) if pretrained else None,
        "model": model_weights(model, pretrained),
        "optimizer": optim.optimizer.state_dict(), "scheduler": optim.scheduler.state_dict(),
        "scaler": optim.scaler.state_dict(), **dataclasses.asdict(position), "rng": rng_state(),
        "settings": settings,
    }


def restore(ckpt: dict, optim: Optimisation) -> Position:
    """Put a run back where ``ckpt`` left it (optimizer, scheduler, scaler, RNG); returns its position."""
    optim.optimizer.load_state_dict(ckpt["optimizer"])
    optim.scheduler.load_state_dict(ckpt["scheduler"])
    optim.scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return Position(ckpt["epoch"], ckpt["step"], ckpt["batches_done"], ckpt.get("best"))


def model_weights(model: M2CLIP, pretrained: Optional[str]) -> dict[str, torch.Tensor]:
    """What a checkpoint needs to rebuild ``model``: the trainable weights, plus the frozen backbone when
    it did not come from a ``pretrained`` file (a random-init backbone cannot be re-created otherwise)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if pretrained is None or k in trainable}


def model_from_checkpoint(ckpt: dict, backend: str = "eager", pretrained: Optional[str] = None) -> M2CLIP:
    """Rebuild the model a checkpoint was trained with: its config, its weights, and its frozen backbone
    (stored in the checkpoint, or read from the ``pretrained`` file it names, or from ``pretrained``)."""
    cfg = M2CLIPConfig.from_dict(ckpt["config"])
    model = build_model(cfg, pretrained=pretrained or ckpt.get("pretrained"), backend=backend)
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if unexpected or trainable & set(missing):
        raise ValueError(f"checkpoint does not fit its own config: missing {sorted(trainable & set(missing))}, "
                         f"unexpected {sorted(unexpected)}")
    return model


def transfer_from_checkpoint(ckpt: dict, num_classes: int, mlm_vocab_size: int, backend: str = "eager",
                             pretrained: Optional[str] = None) -> tuple[M2CLIP, list[str], list[str]]:
    """A new model for another label set, started from a checkpoint's run: its config and backbone, every
    weight whose shape still fits (adapters, text and MLM blocks); the heads whose shape depends on the
    classes start afresh. -> (model, kept tensor names, reset tensor names)."""
    cfg = dataclasses.replace(M2CLIPConfig.from_dict(ckpt["config"]), num_classes=num_classes,
                              mlm_vocab_size=mlm_vocab_size)
    model = build_model(cfg, pretrained=pretrained or ckpt.get("pretrained"), backend=backend)
    own = model.state_dict()
    fitting = {k: v for k, v in ckpt["model"].items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(fitting, strict=False)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    return model, [n for n in trainable if n in fitting], [n for n in trainable if n not in fitting]
