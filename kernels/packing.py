"""Layouts the kernels read in place: parameters stored back to back, so the fused TED-Adapter reads
``W_in = [W1; W3]`` and its output GEMM's augmented operand ``[W2ᵀ; W4ᵀ; b2; b4; 0…]`` instead of assembling
them on every call, and activations as 2-D rows. Pure PyTorch: importing this decorates no Triton kernel."""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch

# The TED-Adapter's output GEMM runs on an augmented K (docs/DESIGN.md §2.1): past the bottleneck's channels, h has
# a column per fc2 bias (ones for the TE branch's b2, the patch gate for the TD branch's b4) and zeros up to
# AUX_COLUMNS; the operand has the biases as rows there. 16, not the 8 that 16-byte rows need: a row stride of h
# that is a multiple of 16 elements is what Triton specialises on, and the stencil's stores of h then vectorise
# (at 8 — a stride of 776 at ViT-B/16 — stencil_fwd compiled to 113 registers and 40% more instructions, not 96).
AUX_COLUMNS = 16


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


def _packed_output(fc2: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Optional[torch.Tensor]:
    """The ``[nb*Ca + AUX_COLUMNS, C]`` buffer that :func:`pack_output` made, when ``fc2``'s weights and biases are
    still its views (checked through their pointers and strides), else None."""
    w0 = fc2[0][0]
    width, ca = w0.shape
    rows, size = len(fc2) * ca + AUX_COLUMNS, w0.element_size()
    if torch.compiler.is_compiling() or w0.stride() != (1, width):
        return None
    storage, base = w0.untyped_storage(), w0.data_ptr()
    for i, (w, b) in enumerate(fc2):
        if (w.dtype != w0.dtype or b.dtype != w0.dtype or w.stride() != (1, width) or b.stride() != (1,)
                or w.untyped_storage().data_ptr() != storage.data_ptr()
                or b.untyped_storage().data_ptr() != storage.data_ptr()
                or w.data_ptr() != base + i * ca * width * size
                or b.data_ptr() != base + (len(fc2) * ca + i) * width * size):
            return None
    if base - storage.data_ptr() + rows * width * size > storage.nbytes():
        return None  # the zero rows are not there
    return w0.t().as_strided((rows, width), (width, 1))


def output_operand(fc2: Sequence[tuple[torch.Tensor, torch.Tensor]], dtype: torch.dtype) -> torch.Tensor:
    """``[W2ᵀ; W4ᵀ; b2; b4; 0…]`` ``[nb*Ca + AUX_COLUMNS, C]`` in ``dtype`` from the (weight ``[C, Ca]``, bias ``[C]``)
    of each present branch: the buffer :func:`pack_output` made (a view, or one cast), else assembled."""
    packed = _packed_output(fc2)
    if packed is not None:
        return packed.to(dtype)
    w0 = fc2[0][0]
    zeros = w0.new_zeros(AUX_COLUMNS - len(fc2), w0.shape[0], dtype=dtype)
    return torch.cat([*(w.t().to(dtype) for w, _ in fc2), *(b.to(dtype)[None] for _, b in fc2), zeros])


def pack_output(fc2: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Make one adapter's fc2 weights ``[C, Ca]`` and biases ``[C]`` (one branch or two) views of one
    ``[nb*Ca + AUX_COLUMNS, C]`` buffer ``[W2ᵀ; W4ᵀ; b2; b4; 0…]`` (each weight stored transposed): the fused
    TED-Adapter's output GEMM reads it in place, and its backward writes the gradients in the same layout, so
    autograd takes them as they are. Values, shapes and the parameter objects are unchanged."""
    if _packed_output(fc2) is not None:
        return
    with torch.no_grad():
        buffer = output_operand([(w.detach(), b.detach()) for w, b in fc2], fc2[0][0].dtype)
        ca = fc2[0][0].shape[1]
        for i, (w, b) in enumerate(fc2):
            w.data, b.data = buffer[i * ca:(i + 1) * ca].t(), buffer[len(fc2) * ca + i]


def pack_ted_adapter(branches: Sequence) -> None:
    """Lay out one TED-Adapter's parameters as the fused op reads them in place — ``branches``: one or both
    branches' :class:`~kernels.reference.BranchWeights` of the parameters themselves: two fc1 weights back to back
    (:func:`pack_pairs`), the fc2 weights and biases in the output GEMM's operand (:func:`pack_output`)."""
    if len(branches) == 2:
        pack_pairs([(branches[0].fc1_weight, branches[1].fc1_weight)])
    pack_output([(b.fc2_weight, b.fc2_bias) for b in branches])


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
