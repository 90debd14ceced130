"""Clip-consistent video transforms: one random draw per clip, applied to all of its frames."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float ``[T, 3, H, W]`` in [0, 1]."""
    return frames.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(clip: torch.Tensor) -> torch.Tensor:
    """CLIP normalisation of ``[T, 3, H, W]`` in [0, 1] -> ``[3, T, H, W]``."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return ((clip - mean) / std).transpose(0, 1).contiguous()


def resize_short_side(clip: torch.Tensor, size: int) -> torch.Tensor:
    """``[T, 3, H, W]`` -> short side ``size``, aspect kept (bilinear, antialiased)."""
    h, w = clip.shape[-2:]
    if min(h, w) == size:
        return clip
    scale = size / min(h, w)
    out = (max(size, round(h * scale)), max(size, round(w * scale)))
    return F.interpolate(clip, size=out, mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)


def train_clip(
    frames: torch.Tensor,
    short_side: int,
    crop_size: int,
    flip: bool,
    generator: torch.Generator,
    randaugment: Optional[torch.nn.Module] = None,
) -> torch.Tensor:
    """Short side to ``short_side`` (the caller draws it: scale jitter), a random ``crop_size`` crop,
    optional horizontal flip and RandAugment — the same for every frame.
    uint8 ``[T, H, W, 3]`` -> normalised ``[3, T, S, S]``."""
    clip = resize_short_side(to_float(frames), short_side)
    h, w = clip.shape[-2:]
    top = int(torch.randint(0, h - crop_size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - crop_size + 1, (1,), generator=generator))
    clip = clip[..., top : top + crop_size, left : left + crop_size]
    if flip and torch.rand((), generator=generator) < 0.5:
        clip = clip.flip(-1)
    if randaugment is not None:  # torchvision v2 draws one op per call: consistent across frames
        clip = randaugment((clip * 255).to(torch.uint8)).float() / 255
    return normalize(clip)


def test_views(frames: torch.Tensor, crop_size: int, num_spatial: int) -> torch.Tensor:
    """Short side to ``crop_size``, then ``num_spatial`` crops evenly spaced along the long side.
    uint8 ``[T, H, W, 3]`` -> normalised ``[num_spatial, 3, T, S, S]``."""
    clip = resize_short_side(to_float(frames), crop_size)
    h, w = clip.shape[-2:]
    tops = torch.linspace(0, h - crop_size, num_spatial).round().long().tolist()
    lefts = torch.linspace(0, w - crop_size, num_spatial).round().long().tolist()
    crops = [clip[..., t : t + crop_size, lf : lf + crop_size] for t, lf in zip(tops, lefts)]
    return torch.stack([normalize(c) for c in crops])
