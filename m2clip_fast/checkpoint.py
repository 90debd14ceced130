"""Building the model, loading CLIP weights, and the released M2-CLIP code's naming."""
from __future__ import annotations

import dataclasses
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from typing import Mapping, Optional, Union

import torch

from .config import M2CLIPConfig
from .model import M2CLIP, create_clip

StateDict = dict[str, torch.Tensor]
PathLike = Union[str, os.PathLike]
# Keys of TorchScript archives that are not weights (OpenAI's metadata; traced constant buffers).
_NON_WEIGHTS = ("input_resolution", "context_length", "vocab_size", "attn_mask")

# (released name, our name) templates. {i} block index, {pos} attn|mlp, {n} 1|2, {m} the rest,
# {extra} the index of the extra text block. The first match wins.
RELEASED_NAMES: tuple[tuple[str, str], ...] = (
    ("visual.transformer.resblocks.{i}.adapter_pre_{pos}.offset_adapter.{m}", "visual_adapters.{i}.{pos}.td.{m}"),
    ("visual.transformer.resblocks.{i}.adapter_pre_{pos}.{m}", "visual_adapters.{i}.{pos}.te.{m}"),
    ("visual.t_adapter.{m}", "temporal_adapter.{m}"),
    ("visual.adapter_fc.{m}", "visual_head.{m}"),
    ("transformer.resblocks.{i}.adapter_pre_{pos}.textad_fc{n}.{m}", "text_adapters.{i}.{pos}.fc{n}.{m}"),
    ("transformer.resblocks.{extra}.{m}", "mlm_block.{m}"),
    ("mlm_adapter.transform.dense.{m}", "mlm_head.dense.{m}"),
    ("mlm_adapter.transform.LayerNorm.{m}", "mlm_head.norm.{m}"),
    ("mlm_adapter.decoder.weight", "mlm_head.decoder.weight"),
    ("mlm_adapter.bias", "mlm_head.bias"),
    ("{m}", "clip.{m}"),
)
_FIELDS = {"i": r"\d+", "pos": "attn|mlp", "n": "[12]", "m": ".+"}


def _template_regex(template: str, extra: int) -> re.Pattern:
    pattern = re.escape(template.replace("{extra}", str(extra)))
    for name, rx in _FIELDS.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{rx})")
    return re.compile(pattern + "$")


def _rename(key: str, pairs: list[tuple[re.Pattern, str]], extra: int) -> str:
    for rx, target in pairs:
        match = rx.match(key)
        if match:
            return target.replace("{extra}", str(extra)).format(**match.groupdict())
    raise KeyError(key)  # unreachable: the last template matches everything


def _released_pairs(extra: int, to_ours: bool) -> list[tuple[re.Pattern, str]]:
    src, dst = (0, 1) if to_ours else (1, 0)
    return [(_template_regex(pair[src], extra), pair[dst]) for pair in RELEASED_NAMES]


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


def build_model(
    cfg: M2CLIPConfig, pretrained: Optional[PathLike] = None, use_fused: Optional[bool] = None
) -> M2CLIP:
    """An M2-CLIP for ``cfg``. ``pretrained``: a local OpenAI CLIP TorchScript archive (``ViT-B-16.pt``)
    or an open_clip state dict (``.pt``/``.bin``/``.safetensors``); nothing is downloaded. The extra text
    block is a copy of the (loaded) last text block. ``use_fused`` overrides ``cfg.use_fused``."""
    if use_fused is not None:
        cfg = dataclasses.replace(cfg, use_fused=use_fused)
    clip = create_clip(cfg.backbone)
    if pretrained is not None:
        load_clip_weights(clip, pretrained)
    return M2CLIP(cfg, clip)


@dataclass
class LoadReport:
    missing: list[str]  # our parameters the checkpoint did not have (left as they were)
    unexpected: list[str]  # checkpoint keys that match nothing of ours (ignored)


def load_released_checkpoint(model: M2CLIP, src: Union[PathLike, Mapping[str, torch.Tensor]]) -> LoadReport:
    """Load weights saved by the released M2-CLIP code (its parameter names) into ``model``.

    Reports missing and unexpected keys by name (a warning, and the returned :class:`LoadReport`);
    raises ``ValueError`` on a shape that does not fit. Conv3d ``[Ca,1,1,3,3]`` kernels become our
    Conv2d ``[Ca,1,3,3]``.
    """
    sd = read_state_dict(src) if not isinstance(src, Mapping) else {k.removeprefix("module."): v for k, v in src.items()}
    extra = len(model.clip.transformer.resblocks)
    pairs = _released_pairs(extra, to_ours=True)
    own = model.state_dict()
    mapped: StateDict = {}
    unexpected: list[str] = []
    for key, value in sd.items():
        ours = _rename(key, pairs, extra)
        if ours not in own:
            unexpected.append(key)
            continue
        target = own[ours].shape
        if value.shape != target:
            if value.numel() != own[ours].numel() or [d for d in value.shape if d != 1] != [d for d in target if d != 1]:
                raise ValueError(f"{key}: checkpoint shape {tuple(value.shape)} does not fit {ours} {tuple(target)}")
            value = value.reshape(target)
        mapped[ours] = value
    missing = sorted(set(own) - set(mapped))
    model.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        warnings.warn(f"released checkpoint: missing {missing}, unexpected {unexpected}", stacklevel=2)
    return LoadReport(missing, sorted(unexpected))


def released_state_dict(model: M2CLIP) -> StateDict:
    """``model``'s weights under the released code's names and shapes (inverse of
    :func:`load_released_checkpoint`)."""
    extra = len(model.clip.transformer.resblocks)
    pairs = _released_pairs(extra, to_ours=False)
    out: StateDict = {}
    for key, value in model.state_dict().items():
        if re.search(r"\.td\.conv\.weight$", key):
            value = value.unsqueeze(2)  # Conv2d [Ca,1,3,3] -> Conv3d [Ca,1,1,3,3]
        out[_rename(key, pairs, extra)] = value
    return out
