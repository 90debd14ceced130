"""Clip-consistent video transforms: one random draw per clip, applied to all of its frames. Workers crop
uint8 clips and draw each clip's flip and RandAugment (from the clip's own generator); on the device,
:func:`augment_batch` applies them and :func:`model_input` makes the model's float input — where those are
cheap and the copy is a quarter of float32's. timm's RandAugment (PIL only) runs in the workers."""
from __future__ import annotations

import functools
import random
from typing import Optional, Union

import numpy as np
import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def channels_first(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> uint8 ``[T, 3, H, W]`` (no copy)."""
    return frames.permute(0, 3, 1, 2)


def model_input(video: torch.Tensor) -> torch.Tensor:
    """What the workers hand over (uint8 clips, cheap to ship and to pin) -> what the model reads: float in
    [0, 1], CLIP-normalised, channels before time. Runs on whatever device ``video`` is on (the training and
    evaluation loops call it after the copy to the GPU). uint8 ``[..., T, 3, S, S]`` -> float
    ``[..., 3, T, S, S]``."""
    mean = torch.tensor(CLIP_MEAN, device=video.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, device=video.device).view(3, 1, 1)
    return ((video.float() / 255 - mean) / std).transpose(-4, -3)


def resize_short_side(clip: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """uint8 ``[T, 3, H, W]`` -> short side ``size``, aspect kept (antialiased; uint8 in and out)."""
    from torchvision.transforms.v2 import functional as TF

    h, w = clip.shape[-2:]
    if min(h, w) == size:
        return clip
    scale = size / min(h, w)
    out = [max(size, round(h * scale)), max(size, round(w * scale))]
    return TF.resize(clip, out, interpolation=_mode(interpolation), antialias=True)


def _mode(interpolation: str):
    from torchvision.transforms import InterpolationMode

    return {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}[interpolation]


def random_resized_crop(clip: torch.Tensor, crop_size: int, scale: tuple[float, float], interpolation: str,
                        generator: torch.Generator) -> torch.Tensor:
    """One RandomResizedCrop draw (torchvision's: area share in ``scale``, aspect 3/4..4/3) for the whole clip,
    resized to ``crop_size``. uint8 ``[T, 3, H, W]`` -> uint8 ``[T, 3, S, S]``."""
    from torchvision.transforms import RandomResizedCrop
    from torchvision.transforms.v2 import functional as TF

    with torch.random.fork_rng(devices=[]):  # torchvision draws from the global RNG: make it ours, then restore it
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        top, left, h, w = RandomResizedCrop.get_params(clip, list(scale), [3 / 4, 4 / 3])
    return TF.resized_crop(clip, top, left, h, w, [crop_size, crop_size], interpolation=_mode(interpolation),
                           antialias=True)


@functools.lru_cache(maxsize=8)
def _timm_randaugment(config: str):
    from timm.data.auto_augment import rand_augment_transform

    return rand_augment_transform(config, {"translate_const": 100, "img_mean": (124, 116, 104)})


def timm_randaugment(clip: torch.Tensor, config: str, seed: int) -> torch.Tensor:
    """timm's RandAugment from its config string (``"rand-m7-n4-mstd0.5-inc1"``), the same ops and magnitudes
    on every frame: each frame is transformed from the random state ``seed``; the global ``random``/NumPy
    states are restored afterwards. timm's ops work on PIL images: CPU only. uint8 ``[T, 3, H, W]`` -> the same."""
    from PIL import Image

    transform = _timm_randaugment(config)
    saved = random.getstate(), np.random.get_state()
    frames = []
    try:
        for frame in clip.permute(0, 2, 3, 1).numpy():
            random.seed(seed)
            np.random.seed(seed)
            frames.append(np.asarray(transform(Image.fromarray(frame)), dtype=np.uint8))
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)


def crop_clip(
    frames: torch.Tensor,
    short_side: int,
    crop_size: int,
    generator: torch.Generator,
    crop_scale: Optional[tuple[float, float]] = None,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """One crop draw for the whole clip: the short side to ``short_side`` (the caller draws it: scale jitter)
    and a random ``crop_size`` crop, or with ``crop_scale`` a random-resized crop over that share of the area.
    uint8 ``[T, H, W, 3]`` -> uint8 ``[T, 3, S, S]``."""
    clip = channels_first(frames)
    if crop_scale is not None:
        return random_resized_crop(clip, crop_size, crop_scale, interpolation, generator)
    clip = resize_short_side(clip, short_side, interpolation)
    h, w = clip.shape[-2:]
    top = int(torch.randint(0, h - crop_size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - crop_size + 1, (1,), generator=generator))
    return clip[..., top : top + crop_size, left : left + crop_size]


def draw_augment(flip: bool, randaugment: Optional[Union[torch.nn.Module, str]],
                 generator: torch.Generator) -> tuple[bool, int]:
    """A clip's augmentation draw, after its crop's: (flip it, the seed of its RandAugment draw; -1 for none)."""
    flipped = bool(flip and torch.rand((), generator=generator) < 0.5)
    seed = int(torch.randint(2**31, (1,), generator=generator)) if randaugment is not None else -1
    return flipped, seed


def augment(clip: torch.Tensor, flipped: bool, seed: int,
            randaugment: Optional[Union[torch.nn.Module, str]]) -> torch.Tensor:
    """Apply a draw (:func:`draw_augment`) to one clip, every frame alike, on the clip's device (a timm config
    string: CPU only). uint8 ``[T, 3, S, S]`` -> the same."""
    if flipped:
        clip = clip.flip(-1)
    if isinstance(randaugment, str):
        clip = timm_randaugment(clip.contiguous(), randaugment, seed)
    elif randaugment is not None:  # torchvision v2: one op draw per call, applied to every frame
        with torch.random.fork_rng(devices=[]):  # it draws from the global RNG: make it the clip's, then restore
            torch.manual_seed(seed)
            clip = randaugment(clip)
    return clip


def augment_batch(video: torch.Tensor, flipped: torch.Tensor, seeds: torch.Tensor,
                  randaugment: Optional[torch.nn.Module]) -> torch.Tensor:
    """:func:`augment` for a batch, on the batch's device (the GPU in training): flips as one masked select
    (no host sync), torchvision's RandAugment clip by clip. uint8 ``[B, T, 3, S, S]``, ``flipped [B]`` bool,
    ``seeds [B]`` int64 (on the CPU) -> uint8 ``[B, T, 3, S, S]``."""
    video = torch.where(flipped.to(video.device, non_blocking=True).view(-1, 1, 1, 1, 1), video.flip(-1), video)
    if randaugment is None:
        return video
    return torch.stack([augment(clip, False, seed, randaugment) for clip, seed in zip(video, seeds.tolist())])


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
    """Crop, flip and RandAugment in one place (:func:`crop_clip`, :func:`draw_augment`, :func:`augment`):
    what a worker does when the augmentation cannot run on the device (timm's RandAugment), and the reference
    the device path is tested against. uint8 ``[T, H, W, 3]`` -> uint8 ``[T, 3, S, S]``."""
    clip = crop_clip(frames, short_side, crop_size, generator, crop_scale, interpolation)
    flipped, seed = draw_augment(flip, randaugment, generator)
    return augment(clip, flipped, seed, randaugment).contiguous()


def test_views(frames: torch.Tensor, crop_size: int, num_spatial: int) -> torch.Tensor:
    """Short side to ``crop_size``, then ``num_spatial`` crops evenly spaced along the long side.
    uint8 ``[T, H, W, 3]`` -> uint8 ``[num_spatial, T, 3, S, S]``."""
    clip = resize_short_side(channels_first(frames), crop_size)
    h, w = clip.shape[-2:]
    tops = torch.linspace(0, h - crop_size, num_spatial).round().long().tolist()
    lefts = torch.linspace(0, w - crop_size, num_spatial).round().long().tolist()
    return torch.stack([clip[..., t : t + crop_size, lf : lf + crop_size] for t, lf in zip(tops, lefts)]).contiguous()
