"""Layouts the kernels read in place: parameters stored back to back, so the fused TED-Adapter reads
``W_in = [W1; W3]`` and ``W_out = [W2, W4]`` instead of concatenating them on every call, and activations as
2-D rows. Pure PyTorch: importing this
decorates no Triton kernel."""
from __future__ import annotations

from typing import Iterable

import torch


def adjacent(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether contiguous ``b`` (same shape and dtype) starts right where contiguous ``a`` ends, in one storage."""
    return (a.shape == b.shape and a.dtype == b.dtype and a.is_contiguous() and b.is_contiguous()
            and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
            and b.data_ptr() == a.data_ptr() + a.numel() * a.element_size())


def pack_pairs(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Make each ``(first, second)`` pair of same-shaped parameters views of one ``[2, *shape]`` buffer.

    Values, shapes and the parameter objects (optimizer state, autograd) are unchanged; only the storage moves.
    """
    with torch.no_grad():
        for first, second in pairs:
            if not adjacent(first, second):
                buffer = torch.stack([first.detach(), second.detach()])
                first.data, second.data = buffer[0], buffer[1]


def is_tap_major(weight: torch.Tensor) -> bool:
    """Whether a depthwise weight ``[C, 1, 3]`` / ``[C, 1, 3, 3]`` is stored tap-major: tap by tap, each tap's
    C channels contiguous."""
    c = weight.shape[0]
    return weight.stride(0) == 1 and weight.stride(-1) == c and (weight.dim() == 3 or weight.stride(-2) == 3 * c)


def dense_taps(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` itself when contiguous or tap-major (the two layouts the stencil kernels read), else a
    contiguous copy."""
    return weight if weight.is_contiguous() or is_tap_major(weight) else weight.contiguous()


def tap_major(weight: torch.Tensor) -> torch.Tensor:
    """A tap-major copy of a depthwise weight, same shape and values: a stencil program then reads each tap
    of its channels with vector loads instead of strided scalar ones."""
    taps_first = weight.permute(*range(1, weight.dim()), 0).contiguous()
    return taps_first.permute(weight.dim() - 1, *range(weight.dim() - 1))


def as_rows(x: torch.Tensor, width: int) -> torch.Tensor:
    """``x [..., width]`` as a 2-D ``[rows, width]`` view with unit column stride (copies only if needed)."""
    x2 = x.reshape(-1, width)
    return x2 if x2.stride(1) == 1 or width == 1 else x2.contiguous()
