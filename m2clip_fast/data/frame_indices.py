"""Which frames of a video to decode. Every function returns int64 frame indices in ``[0, n)``.

Videos shorter than the sampled span are sampled evenly over their whole length (frames repeat when
``n < T``), so no video is too short to sample as long as it has one frame.
"""
from __future__ import annotations

import numpy as np


def _even(n: int, count: int) -> np.ndarray:
    return np.linspace(0, n - 1, count).round().astype(np.int64)


def _check(n: int, num_frames: int) -> None:
    if n < 1:
        raise ValueError("the video has no frames")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")


def dense_indices(n: int, num_frames: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """Training: ``num_frames`` frames ``stride`` apart from a random start. -> ``[T]``."""
    _check(n, num_frames)
    span = (num_frames - 1) * stride + 1
    if n < span:
        return _even(n, num_frames)
    start = int(rng.integers(0, n - span + 1))
    return start + np.arange(num_frames, dtype=np.int64) * stride


def dense_clips(n: int, num_frames: int, stride: int, num_clips: int) -> np.ndarray:
    """Test: ``num_clips`` dense clips with evenly spaced starts. -> ``[num_clips, T]``."""
    _check(n, num_frames)
    span = (num_frames - 1) * stride + 1
    if n < span:
        return np.stack([_even(n, num_frames)] * num_clips)
    starts = np.linspace(0, n - span, num_clips).round().astype(np.int64)
    return starts[:, None] + np.arange(num_frames, dtype=np.int64)[None, :] * stride


def segment_indices(n: int, num_frames: int, rng: np.random.Generator | None) -> np.ndarray:
    """TSN: one frame from each of ``num_frames`` equal segments, random in training (``rng``) and the
    middle one at test (``rng=None``). -> ``[T]``."""
    _check(n, num_frames)
    edges = np.linspace(0, n, num_frames + 1)
    if rng is None:
        picks = (edges[:-1] + edges[1:]) / 2
    else:
        picks = edges[:-1] + rng.random(num_frames) * (edges[1:] - edges[:-1])
    return np.clip(np.floor(picks), 0, n - 1).astype(np.int64)


def segment_clips(n: int, num_frames: int, num_clips: int) -> np.ndarray:
    """Test views for TSN sampling: segment positions shifted evenly within each segment. -> ``[num_clips, T]``."""
    _check(n, num_frames)
    edges = np.linspace(0, n, num_frames + 1)
    offsets = (np.arange(num_clips) + 0.5) / num_clips
    picks = edges[None, :-1] + offsets[:, None] * (edges[1:] - edges[:-1])[None, :]
    return np.clip(np.floor(picks), 0, n - 1).astype(np.int64)
