"""QuickGELU ``y = x·σ(1.702·x)``, the MLP activation of OpenAI's CLIP towers, as one elementwise kernel each
way that keeps only ``x`` for the backward.

Eager, ``x * torch.sigmoid(1.702 * x)`` is three kernels forward and saves two tensors of the MLP's hidden
width for the backward (``x`` and ``σ``): in a frozen ViT-B/16 at 32 clips × 8 frames, 3.7 GB of a training
step's activations, half of them avoidable. Here the forward reads ``x`` once and writes ``y``; the backward
recomputes ``σ`` from ``x``:
    dx = dy · σ · (1 + 1.702·x·(1 − σ))
Arithmetic in fp32, results stored in ``x``'s dtype.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .. import reference
from ..checks import check_tensors
from ..runtime import INTERPRET, can_run_triton, cdiv, compilable, launch

BLOCK = 1024  # elements a program: 8 bf16 (16 bytes) a thread with 4 warps
_ALPHA = tl.constexpr(1.702)


@triton.jit
def _quick_gelu_kernel(x_ptr, dy_ptr, out_ptr, n, BACKWARD: tl.constexpr, BLOCK: tl.constexpr):
    """1-D grid over the ``n`` elements of contiguous ``x`` (and ``dy``): ``out`` = y, or dx with BACKWARD."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # int64: n may pass 2³¹
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    s = tl.sigmoid(x * _ALPHA)
    if BACKWARD:
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        out = dy * s * (1.0 + x * _ALPHA * (1.0 - s))
    else:
        out = x * s
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


def _run_fake(x, dy):
    return torch.empty_like(x)


@compilable("quick_gelu", _run_fake)
def _run(x: torch.Tensor, dy: Optional[torch.Tensor]) -> torch.Tensor:
    """y from contiguous x, or dx from x and contiguous dy (same shape and dtype as x)."""
    n = x.numel()
    out = torch.empty(n, dtype=x.dtype, device=x.device)  # flat: the kernel's view; the caller gets x's shape
    if n:
        launch(_quick_gelu_kernel, (cdiv(n, BLOCK),), x, dy, out, n, BACKWARD=dy is not None, BLOCK=BLOCK,
               name="quick_gelu", num_warps=1 if INTERPRET else 4)
    return out.view(x.shape)


class _QuickGELUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x = x.contiguous()
        ctx.save_for_backward(x)
        return _run(x, None)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return _run(x, dy.contiguous())


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """Fused QuickGELU; same contract as :func:`kernels.reference.quick_gelu`. x ``[...]`` -> same shape and dtype."""
    check_tensors("quick_gelu", x)
    if not can_run_triton(x, "quick_gelu"):
        return reference.quick_gelu(x)
    return _QuickGELUFunction.apply(x)
