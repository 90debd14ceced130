"""Eager PyTorch reference of every op in :mod:`kernels` — the specification the Triton kernels match.

Token layout used throughout: a clip of ``T`` frames is stored frame-major, ``x[b*T + t, l, c]``.
For the TED-Adapter ``l = 0`` is the CLS token and ``l = 1 + i*w + j`` the patch at grid row ``i``,
column ``j`` of an ``h×w`` patch grid.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from einops import rearrange

Tensor = torch.Tensor


class BranchWeights(NamedTuple):
    """The six tensors of one bottleneck branch ``fc2(dwconv(fc1(x)))``.

    fc1_weight ``[Ca, C]``, fc1_bias ``[Ca]``; conv_weight ``[Ca, 1, 3]`` (temporal) or ``[Ca, 1, 3, 3]``
    (spatial), conv_bias ``[Ca]``; fc2_weight ``[C, Ca]``, fc2_bias ``[C]``.
    """

    fc1_weight: Tensor
    fc1_bias: Tensor
    conv_weight: Tensor
    conv_bias: Tensor
    fc2_weight: Tensor
    fc2_bias: Tensor


def temporal_conv(x: Tensor, num_frames: int, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """Depthwise conv over the frame axis, kernel 3, zero padding.

    x ``[B*T, L, C]``, weight ``[C, 1, 3]``, bias ``[C]`` -> ``[B*T, L, C]``.
    """
    b = x.shape[0] // num_frames
    y = rearrange(x, "(b t) l c -> (b l) c t", t=num_frames)
    y = F.conv1d(y, weight, bias, padding=1, groups=x.shape[-1])
    return rearrange(y, "(b l) c t -> (b t) l c", b=b)


def temporal_difference(x: Tensor, num_frames: int) -> Tensor:
    """``d_t = x_t - x_{t-1}`` for ``t >= 1`` and ``d_0 = 0``. x ``[B*T, N, C]`` -> ``[B*T, N, C]``."""
    y = rearrange(x, "(b t) n c -> b t n c", t=num_frames)
    d = torch.cat([torch.zeros_like(y[:, :1]), y[:, 1:] - y[:, :-1]], dim=1)
    return rearrange(d, "b t n c -> (b t) n c")


def spatial_conv(x: Tensor, grid: tuple[int, int], weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """Depthwise 3×3 conv over each frame's ``h×w`` token grid, zero padding.

    x ``[B*T, h*w, C]``, weight ``[C, 1, 3, 3]``, bias ``[C]`` -> ``[B*T, h*w, C]``.
    """
    h, w = grid
    y = rearrange(x, "n (h w) c -> n c h w", h=h, w=w)
    y = F.conv2d(y, weight, bias, padding=1, groups=x.shape[-1])
    return rearrange(y, "n c h w -> n (h w) c")


def temporal_branch(x: Tensor, num_frames: int, p: BranchWeights) -> Tensor:
    """TE: ``fc2(conv_T(fc1(x)))``. x ``[B*T, L, C]`` -> ``[B*T, L, C]``."""
    h = F.linear(x, p.fc1_weight, p.fc1_bias)
    h = temporal_conv(h, num_frames, p.conv_weight, p.conv_bias)
    return F.linear(h, p.fc2_weight, p.fc2_bias)


def difference_branch(patches: Tensor, num_frames: int, grid: tuple[int, int], p: BranchWeights) -> Tensor:
    """TD: ``fc2(conv_3x3(fc1(Δ_t patches)))``. patches ``[B*T, h*w, C]`` -> ``[B*T, h*w, C]``."""
    g = F.linear(temporal_difference(patches, num_frames), p.fc1_weight, p.fc1_bias)
    g = spatial_conv(g, grid, p.conv_weight, p.conv_bias)
    return F.linear(g, p.fc2_weight, p.fc2_bias)


def ted_adapter(
    x: Tensor, num_frames: int, grid: tuple[int, int], te: Optional[BranchWeights], td: Optional[BranchWeights]
) -> Tensor:
    """TED-Adapter ``x + TE(x)`` plus ``TD`` on the patch tokens (out of place).

    x ``[B*T, 1 + h*w, C]`` -> same shape. With ``td=None`` this is the TE path alone, which on
    ``[B*T, 1, D]`` frame embeddings is the global temporal adapter; with ``te=None`` the TD path alone.
    """
    out = x if te is None else x + temporal_branch(x, num_frames, te)
    if td is None:
        return out
    patch_delta = difference_branch(x[:, 1:], num_frames, grid, td)
    return torch.cat([out[:, :1], out[:, 1:] + patch_delta], dim=1)


def text_adapter(x: Tensor, fc1_weight: Tensor, fc1_bias: Tensor, fc2_weight: Tensor, fc2_bias: Tensor) -> Tensor:
    """``x + fc2(GELU(fc1(x)))`` with exact (erf) GELU. x ``[..., D]`` -> ``[..., D]``."""
    return x + F.linear(F.gelu(F.linear(x, fc1_weight, fc1_bias)), fc2_weight, fc2_bias)


def quick_gelu(x: Tensor) -> Tensor:
    """OpenAI CLIP's MLP activation ``x·σ(1.702·x)`` (open_clip's ``QuickGELU``). x ``[...]`` -> same shape."""
    return x * torch.sigmoid(1.702 * x)


def add_layer_norm(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                   residual: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """A residual stream's branch point: ``h = x + residual`` (``h = x`` without one) and ``y = LayerNorm(h)``
    over the last dim, in h's dtype (the affine parameters cast to it; autocast off, whose fp32 policy would
    up-cast). x, residual ``[..., C]``; weight, bias ``[C]`` or None -> h, y ``[..., C]``."""
    h = x if residual is None else x + residual
    with torch.autocast(h.device.type, enabled=False):
        cast = lambda t: None if t is None else t.to(h.dtype)  # noqa: E731
        return h, F.layer_norm(h, h.shape[-1:], cast(weight), cast(bias), eps)


def temporal_adapter(f: Tensor, num_frames: int, weights: BranchWeights) -> Tensor:
    """Global temporal adapter ``f + fc2(conv_T(fc1(f)))`` on frame embeddings ``[B*T, D]`` -> ``[B*T, D]``."""
    return ted_adapter(f.unsqueeze(1), num_frames, (0, 0), weights, None).squeeze(1)
