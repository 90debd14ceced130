"""Training checkpoints: atomic writes, safe loading (``weights_only=True``), RNG states, and
rebuilding a model from a checkpoint."""
from __future__ import annotations

import os
import pickle
import random
import tempfile
from typing import Any, Optional

import numpy as np
import torch

from .checkpoint import build_model
from .config import M2CLIPConfig
from .model import M2CLIP

FORMAT = "m2clip_fast/1"
LATEST = "last.pt"


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
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused a global: code or objects we do not load
        raise ValueError(f"{path} holds objects that are not allowed in a checkpoint (only tensors and plain "
                         "data are loaded); it was refused and nothing in it was run") from None
    except Exception as err:  # truncated, corrupt or not a torch file at all
        detail = str(err).strip().splitlines()[0][:120] if str(err).strip() else ""
        reason = f"{type(err).__name__}: {detail}" if detail else type(err).__name__
        raise ValueError(f"{path} is not a valid checkpoint (torch.load could not read it: {reason})") from None
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


def model_weights(model: M2CLIP, pretrained: Optional[str]) -> dict[str, torch.Tensor]:
    """What a checkpoint needs to rebuild ``model``: the trainable weights, plus the frozen backbone when
    it did not come from a ``pretrained`` file (a random-init backbone cannot be re-created otherwise)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if pretrained is None or k in trainable}


def model_from_checkpoint(ckpt: dict, use_fused: Optional[bool] = None, pretrained: Optional[str] = None) -> M2CLIP:
    """Rebuild the model a checkpoint was trained with: its config, its weights, and its frozen backbone
    (stored in the checkpoint, or read from the ``pretrained`` file it names, or from ``pretrained``)."""
    cfg = M2CLIPConfig.from_dict(ckpt["config"])
    model = build_model(cfg, pretrained=pretrained or ckpt.get("pretrained"), use_fused=use_fused)
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if unexpected or trainable & set(missing):
        raise ValueError(f"checkpoint does not fit its own config: missing {sorted(trainable & set(missing))}, "
                         f"unexpected {sorted(unexpected)}")
    return model
