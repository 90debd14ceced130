"""The released M2-CLIP code's parameter names and shapes: loading its checkpoints into our model, and
writing ours under its names."""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Mapping, Union

import torch

from .factory import PathLike, StateDict, read_state_dict
from .model import M2CLIP

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
