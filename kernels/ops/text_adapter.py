"""The fused text adapter ``out = x + GELU(x·W1ᵀ + b1)·W2ᵀ + b2`` (exact GELU): two GEMMs with fused
epilogues forward, four GEMMs and one reduction backward.

Forward:  a = GELU(u), u = x·W1ᵀ + b1 (GEMM; bias, GELU and the store of ``u`` in the epilogue);
          out = x + a·W2ᵀ + b2 (GEMM; bias and residual in the epilogue).
Backward: du = (dout·W2) ⊙ GELU'(u) (GEMM; GELU' and the column sums of du — b1's gradient — in the epilogue);
          dW2 = doutᵀ·a (weight-gradient GEMM: cuBLAS, or ours split-K); dx = dout + du·W1 (GEMM; residual and the
          column sums of dout — b2's gradient — in the epilogue); dW1 = duᵀ·x (the same); every partial summed in a fixed
          order into the parameters' dtype (one launch, :mod:`kernels.primitives.reduce`).
"""
from __future__ import annotations

import torch

from .. import reference
from ..checks import check, check_tensors
from ..dtypes import compute_dtype
from ..packing import as_rows
from ..primitives.gemm import colsum_rows, gemm, weight_grad, weight_grad_slices
from ..primitives.reduce import Partials
from ..runtime import can_run_triton, compilable


def _forward_fake(x, w1, b1, w2, b2):
    inner = x.new_empty(x.shape[0], w1.shape[0], dtype=w1.dtype)
    return torch.empty_like(x), inner, torch.empty_like(inner)


@compilable("text_adapter_forward", _forward_fake)
def _forward(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
             b2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x ``[M, D]`` -> out ``[M, D]``, pre-activation u and activation a ``[M, Ca]``."""
    pre = x.new_empty(x.shape[0], w1.shape[0], dtype=w1.dtype)
    act = gemm(x, w1.t(), bias=b1, epilogue="gelu", pre=pre, out_dtype=w1.dtype, dot=w1.dtype)
    out = gemm(act, w2.t(), bias=b2, residual=x, out_dtype=x.dtype, dot=w2.dtype)
    return out, pre, act


def _backward_fake(dout, x, pre, act, w1, w2, grad_dtype):
    return torch.empty_like(x), x.new_empty(2 * w1.numel() + sum(w1.shape), dtype=grad_dtype)


@compilable("text_adapter_backward", _backward_fake)
def _backward(dout: torch.Tensor, x: torch.Tensor, pre: torch.Tensor, act: torch.Tensor, w1: torch.Tensor,
              w2: torch.Tensor, grad_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """-> dx and ``[dW1 | dW2 | db1 | db2]`` flat in ``grad_dtype``."""
    M, (ca, width) = x.shape[0], w1.shape
    split1 = weight_grad_slices(ca, width, M, x.device, w2.dtype, x.dtype, grad_dtype)  # du is in w2's dtype
    split2 = weight_grad_slices(width, ca, M, x.device, dout.dtype, act.dtype, grad_dtype)
    parts = Partials([(split1, w1.numel()), (split2, w2.numel()), (colsum_rows(M), ca), (colsum_rows(M), width)],
                     x.device, grad_dtype)
    du = gemm(dout, w2, epilogue="gelu_grad", aux=pre, colsum="output", colsum_out=parts.part(2),
              out_dtype=w2.dtype, dot=w2.dtype)
    weight_grad(dout, act, parts, 1, w2.shape, w2.dtype)
    dx = gemm(du, w1, residual=dout, colsum="residual", colsum_out=parts.part(3), out_dtype=x.dtype, dot=w1.dtype)
    weight_grad(du, x, parts, 0, w1.shape, w1.dtype)
    return dx, parts.sum()


class _TextAdapterFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2):
        dtype = compute_dtype(x)
        rows = as_rows(x, x.shape[-1])
        cw1, cw2 = w1.to(dtype), w2.to(dtype)
        out, pre, act = _forward(rows, cw1, b1, cw2, b2)
        ctx.save_for_backward(rows, pre, act, cw1, cw2)
        ctx.grad_dtype, ctx.x_shape = w1.dtype, x.shape
        return out.view(x.shape)

    @staticmethod
    def backward(ctx, dout):
        x, pre, act, w1, w2 = ctx.saved_tensors
        dx, flat = _backward(as_rows(dout, x.shape[1]), x, pre, act, w1, w2, ctx.grad_dtype)
        dw1, dw2, db1, db2 = Partials.split(flat, [w1.shape, w2.shape, w1.shape[:1], w2.shape[:1]])
        return dx.view(ctx.x_shape), dw1, db1, dw2, db2


def text_adapter(
    x: torch.Tensor, fc1_weight: torch.Tensor, fc1_bias: torch.Tensor, fc2_weight: torch.Tensor, fc2_bias: torch.Tensor
) -> torch.Tensor:
    """Fused ``x + fc2(GELU(fc1(x)))``; same contract as :func:`kernels.reference.text_adapter`.

    x ``[..., D]``, fc1 ``[Ca, D]``/``[Ca]``, fc2 ``[D, Ca]``/``[D]`` -> ``[..., D]``.
    """
    check_tensors("text_adapter", x, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    width, ca = x.shape[-1], fc1_weight.shape[0]
    for name, t, shape in (("fc1_weight", fc1_weight, (ca, width)), ("fc1_bias", fc1_bias, (ca,)),
                           ("fc2_weight", fc2_weight, (width, ca)), ("fc2_bias", fc2_bias, (width,))):
        check(tuple(t.shape) == shape, f"text_adapter: {name} must be {list(shape)} for x [..., {width}], got {list(t.shape)}")
    if not can_run_triton(x, "text_adapter"):
        return reference.text_adapter(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    return _TextAdapterFunction.apply(x, fc1_weight, fc1_bias.contiguous(), fc2_weight, fc2_bias.contiguous())
