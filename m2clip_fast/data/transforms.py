"""Clip-consistent video transforms: one random draw per clip, applied to all of its frames."""
from __future__ import annotations

import functools
import random
from typing import Optional, Union

import numpy as np
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


def resize_short_side(clip: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """``[T, 3, H, W]`` -> short side ``size``, aspect kept (antialiased)."""
    h, w = clip.shape[-2:]
    if min(h, w) == size:
        return clip
    scale = size / min(h, w)
    out = (max(size, round(h * scale)), max(size, round(w * scale)))
    return F.interpolate(clip, size=out, mode=interpolation, antialias=True, align_corners=False).clamp_(0, 1)


def random_resized_crop(clip: torch.Tensor, crop_size: int, scale: tuple[float, float], interpolation: str,
                        generator: torch.Generator) -> torch.Tensor:
    """One RandomResizedCrop draw (torchvision's: area share in ``scale``, aspect 3/4..4/3) for the whole clip,
    resized to ``crop_size``. ``[T, 3, H, W]`` -> ``[T, 3, S, S]``."""
    from torchvision.transforms import RandomResizedCrop

    with torch.random.fork_rng(devices=[]):  # torchvision draws from the global RNG: make it ours, then restore it
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        top, left, h, w = RandomResizedCrop.get_params(clip, list(scale), [3 / 4, 4 / 3])
    clip = clip[..., top : top + h, left : left + w]
    return F.interpolate(clip, size=(crop_size, crop_size), mode=interpolation, antialias=True,
                         align_corners=False).clamp_(0, 1)


@functools.lru_cache(maxsize=8)
def _timm_randaugment(config: str):
    from timm.data.auto_augment import rand_augment_transform

    return rand_augment_transform(config, {"translate_const": 100, "img_mean": (124, 116, 104)})


def timm_randaugment(clip: torch.Tensor, config: str, generator: torch.Generator) -> torch.Tensor:
    """timm's RandAugment from its config string (``"rand-m7-n4-mstd0.5-inc1"``), the same ops and magnitudes
    on every frame: each frame is transformed from the same random state (drawn from ``generator``); the
    global ``random``/NumPy states are restored afterwards. ``[T, 3, H, W]`` in [0, 1] -> the same."""
    from PIL import Image

    transform = _timm_randaugment(config)
    seed = int(torch.randint(2**31, (1,), generator=generator))
    saved = random.getstate(), np.random.get_state()
    frames = []
    try:
        for frame in (clip * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy():
            random.seed(seed)
            np.random.seed(seed)
            frames.append(np.asarray(transform(Image.fromarray(frame)), dtype=np.uint8))
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255


def train_clip(
    frames: torch.Tensor,
    short_side: int,
    crop_size: int,
    flip: bool,
    generator: torch.Generator,
    randaugment: Optional[Union[torch.nn.Module, str]] = None,
    crop_scale: Optional[tuple[float, float]] = None,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """One random draw per clip, applied to every frame: the crop — the short side to ``short_side`` (the
    caller draws it: scale jitter) and a random ``crop_size`` crop, or with ``crop_scale`` a random-resized
    crop over that share of the area — then an optional horizontal flip and RandAugment (a torchvision
    module, or a timm config string). uint8 ``[T, H, W, 3]`` -> normalised ``[3, T, S, S]``."""
    clip = to_float(frames)
    if crop_scale is not None:
        clip = random_resized_crop(clip, crop_size, crop_scale, interpolation, generator)
    else:
        clip = resize_short_side(clip, short_side, interpolation)
        h, w = clip.shape[-2:]
        top = int(torch.randint(0, h - crop_size + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - crop_size + 1, (1,), generator=generator))
        clip = clip[..., top : top + crop_size, left : left + crop_size]
    if flip and torch.rand((), generator=generator) < 0.5:
        clip = clip.flip(-1)
    if isinstance(randaugment, str):
        clip = timm_randaugment(clip, randaugment, generator)
    elif randaugment is not None:  # torchvision v2 draws one op per call: consistent across frames
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
