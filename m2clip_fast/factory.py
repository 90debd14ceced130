"""Making a model: an open_clip CLIP from a name or config, its weights from a local file, and the
M2-CLIP around it."""
from __future__ import annotations

import os
import socket
import textwrap
import urllib.parse
import warnings
import zipfile
from typing import Mapping, Optional, Union

import open_clip
import torch
from torch import nn

from .config import M2CLIPConfig
from .model import M2CLIP

StateDict = dict[str, torch.Tensor]
PathLike = Union[str, os.PathLike]
# Keys of TorchScript archives that are not weights (OpenAI's metadata; traced constant buffers).
_NON_WEIGHTS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


def create_clip(backbone: Union[str, dict]) -> nn.Module:
    """A randomly initialised open_clip ``CLIP`` from a model name or a model-config dict."""
    if isinstance(backbone, str):
        model_cfg = open_clip.get_model_config(backbone)
        if model_cfg is None:
            raise ValueError(f"unknown open_clip model {backbone!r}; see open_clip.list_models()")
    else:
        model_cfg = dict(backbone)
    missing = {"embed_dim", "vision_cfg", "text_cfg"} - set(model_cfg)
    if missing:
        raise ValueError(f"backbone config lacks {sorted(missing)}")
    return open_clip.model.CLIP(
        embed_dim=model_cfg["embed_dim"],
        vision_cfg=model_cfg["vision_cfg"],
        text_cfg=model_cfg["text_cfg"],
        quick_gelu=model_cfg.get("quick_gelu", False),
    )


def _is_torchscript(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith("constants.pkl") for name in zf.namelist())


def read_state_dict(path: PathLike) -> StateDict:
    """Tensors from ``.safetensors``, a ``torch.save`` file (loaded with ``weights_only=True``) or an
    OpenAI TorchScript archive. Unwraps ``{"state_dict": ...}``/``{"model": ...}`` and ``module.``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(path)
    elif _is_torchscript(path):
        with warnings.catch_warnings():  # OpenAI's archives are TorchScript; jit.load warns it is deprecated
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.14; torch 2.11 says DeprecationWarning
            warnings.simplefilter("ignore", DeprecationWarning)
            sd = torch.jit.load(path, map_location="cpu").state_dict()
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(sd, Mapping) and isinstance(sd.get(wrapper), Mapping):
            sd = sd[wrapper]
    if not isinstance(sd, Mapping):
        raise ValueError(f"{path} holds a {type(sd).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in sd.items() if k not in _NON_WEIGHTS}


def load_clip_weights(clip: torch.nn.Module, path: PathLike) -> None:
    """Load an OpenAI CLIP archive or an open_clip state dict into an open_clip ``CLIP`` (strict)."""
    sd = read_state_dict(path)
    own = clip.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    mismatched = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{path} does not fit this backbone: missing {missing[:8]}, unexpected {unexpected[:8]}, "
            f"shape mismatches {mismatched[:8]} (counts {len(missing)}/{len(unexpected)}/{len(mismatched)})"
        )
    clip.load_state_dict(sd)


def short_reason(err: BaseException, limit: int = 160) -> str:
    """``"TypeName: the first line of its message"``, shortened at a word boundary (never mid-word)."""
    lines = str(err).strip().splitlines()
    detail = textwrap.shorten(lines[0], limit, placeholder=" …") if lines else ""
    return f"{type(err).__name__}: {detail}" if detail else type(err).__name__


def resolve_pretrained(backbone: Union[str, dict], pretrained: PathLike, cache_dir: Optional[str] = None) -> str:
    """A local weights file for ``pretrained``: the path itself, or an open_clip pretrained tag of the backbone
    (``openai``, ``laion2b_s34b_b88k``, ...) fetched through open_clip's own download and cache (once; a cached
    file needs no network). With no network and nothing cached, the error says how to use a local file."""
    path = os.fspath(pretrained)
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        raise FileNotFoundError(f"--pretrained {path} is a folder: give the weights file in it")
    if not isinstance(backbone, str):
        raise FileNotFoundError(f"--pretrained {path!r} is neither a file nor an open_clip tag: this model's backbone "
                                "is a small test config with no published weights (give a local weights file of its "
                                "shape, or leave --pretrained out)")
    names = [backbone]
    names += [n.removesuffix("-quickgelu") for n in names if n.endswith("-quickgelu")]
    for name in names:
        if path in open_clip.list_pretrained_tags_by_model(name):
            tag_cfg = open_clip.get_pretrained_cfg(name, path)
            try:
                target = _cached_on_hub(tag_cfg, cache_dir)
                if target is None:
                    _check_reachable(tag_cfg)
                    target = open_clip.pretrained.download_pretrained(tag_cfg, cache_dir=cache_dir)
            except Exception as err:  # no network, hub refused, ...: say what to do instead
                reason = short_reason(err)
                example = f"{name.removesuffix('-quickgelu')}.pt" if path == "openai" else "open_clip_pytorch_model.bin"
                raise ValueError(f"could not get open_clip's '{path}' weights for {name} ({reason}). Without a "
                                 "network, fetch them where there is one (open_clip caches them) or give a local "
                                 f"file: --pretrained /path/to/{example}") from None
            if target and os.path.isfile(target):
                return target
    tags = sorted({t for n in names for t in open_clip.list_pretrained_tags_by_model(n)})
    raise FileNotFoundError(f"--pretrained {path!r} is neither a file nor an open_clip tag of this backbone"
                            + (f" ({', '.join(tags)})" if tags else ""))


def _cached_on_hub(tag_cfg: dict, cache_dir: Optional[str]) -> Optional[str]:
    """The tag's weights file if Hugging Face's cache already holds it (open_clip's names, the safetensors
    alternative first), found without the network; else None."""
    hub = tag_cfg.get("hf_hub", "")
    if not hub:
        return None
    import huggingface_hub

    repo, filename = os.path.split(hub)
    filename = filename or open_clip.pretrained.HF_WEIGHTS_NAME
    safe = filename[:-4] + ".safetensors" if filename.endswith((".bin", ".pth")) else None
    if filename == open_clip.pretrained.HF_WEIGHTS_NAME:
        safe = open_clip.pretrained.HF_SAFE_WEIGHTS_NAME
    for name in filter(None, (safe, filename)):
        found = huggingface_hub.try_to_load_from_cache(repo, name, cache_dir=cache_dir)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def _check_reachable(tag_cfg: dict, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not after a minute of the hub client's retries, when the weights' host cannot be reached
    (no DNS, no route). Skipped where a proxy is configured (the proxy, not us, reaches the host) and where the
    hub client is offline anyway (it says so itself)."""
    proxied = any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))
    if proxied or os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        return
    hub_endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = hub_endpoint if tag_cfg.get("hf_hub") else tag_cfg.get("url", "")
    host = urllib.parse.urlsplit(url).hostname
    if not host:
        return
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as err:
        raise ConnectionError(f"{host} cannot be reached: {err.strerror or err}") from None


def build_model(
    cfg: M2CLIPConfig, pretrained: Optional[PathLike] = None, backend: str = "eager"
) -> M2CLIP:
    """An M2-CLIP for ``cfg``. ``pretrained``: a local OpenAI CLIP TorchScript archive (``ViT-B-16.pt``)
    or an open_clip state dict (``.pt``/``.bin``/``.safetensors``), or an open_clip pretrained tag of the
    backbone (:func:`resolve_pretrained`). The extra text block is a copy of the (loaded) last text block.
    ``backend``: ``"eager"`` (the reference adapters) or ``"fused"`` (the Triton kernels)."""
    clip = create_clip(cfg.backbone)
    if pretrained is not None:
        load_clip_weights(clip, resolve_pretrained(cfg.backbone, pretrained))
    return M2CLIP(cfg, clip, backend)
