"""Parameters stored back to back, so the fused TED-Adapter reads ``W_in = [W1; W3]`` and
``W_out = [W2, W4]`` in place instead of concatenating them on every call. Pure PyTorch: importing this
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
