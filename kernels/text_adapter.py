"""The fused text adapter ``out = x + GELU(x·W1ᵀ + b1)·W2ᵀ + b2`` (exact GELU): two GEMMs with fused
epilogues, forward and backward.

Forward:  a = GELU(u), u = x·W1ᵀ + b1 (GEMM; bias, GELU and the store of ``u`` in the epilogue);
          out = x + a·W2ᵀ + b2 (GEMM; bias and residual in the epilogue).
Backward: du = (dout·W2) ⊙ GELU'(u) (GEMM; GELU' in the epilogue); dW2 = doutᵀ·a; db2 = Σ dout;
          dx = dout + du·W1 (GEMM; residual in the epilogue); dW1 = duᵀ·x; db1 = Σ du.
"""
from __future__ import annotations

import torch

from . import reference
from .gemm import gemm
from .utils import as_rows, can_run_triton, check, check_tensors, compute_dtype


@torch.library.custom_op("m2clip_fast::text_adapter", mutates_args=())
def _text_adapter_op(
    x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    act, pre = gemm(x, w1.t(), bias=b1, epilogue="gelu", store_pre=True, out_dtype=w1.dtype, dot=w1.dtype)
    out, _ = gemm(act, w2.t(), bias=b2, residual=x, out_dtype=x.dtype, dot=w2.dtype)
    return out, pre, act


@_text_adapter_op.register_fake
def _(x, w1, b1, w2, b2):
    inner = x.new_empty(x.shape[0], w1.shape[0], dtype=w1.dtype)
    return torch.empty_like(x), inner, torch.empty_like(inner)


@torch.library.custom_op("m2clip_fast::text_adapter_backward", mutates_args=())
def _text_adapter_backward_op(
    dout: torch.Tensor, x: torch.Tensor, pre: torch.Tensor, act: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor
) -> list[torch.Tensor]:
    """-> [dx, dW1, db1, dW2, db2] (weight gradients in fp32)."""
    du, _ = gemm(dout, w2, epilogue="gelu_grad", aux=pre, out_dtype=w2.dtype, dot=w2.dtype)
    dw2, _ = gemm(dout.t(), act, out_dtype=torch.float32, dot=w2.dtype)
    dx, _ = gemm(du, w1, residual=dout, out_dtype=x.dtype, dot=w1.dtype)
    dw1, _ = gemm(du.t(), x, out_dtype=torch.float32, dot=w1.dtype)
    return [dx, dw1, du.sum(0, dtype=torch.float32), dw2, dout.sum(0, dtype=torch.float32)]


@_text_adapter_backward_op.register_fake
def _(dout, x, pre, act, w1, w2):
    f32 = dict(device=x.device, dtype=torch.float32)
    return [torch.empty_like(x), torch.empty(w1.shape, **f32), torch.empty(w1.shape[0], **f32),
            torch.empty(w2.shape, **f32), torch.empty(w2.shape[0], **f32)]


def _setup(ctx, inputs, output):
    x, w1, b1, w2, b2 = inputs
    _, pre, act = output
    ctx.save_for_backward(x, pre, act, w1, w2)


def _backward(ctx, dout, _dpre, _dact):
    x, pre, act, w1, w2 = ctx.saved_tensors
    dx, dw1, db1, dw2, db2 = _text_adapter_backward_op(dout.contiguous(), x, pre, act, w1, w2)
    return dx, dw1.to(w1.dtype), db1.to(w1.dtype), dw2.to(w2.dtype), db2.to(w2.dtype)


_text_adapter_op.register_autograd(_backward, setup_context=_setup)


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
    dtype = compute_dtype(x)
    w1, b1, w2, b2 = (t.to(dtype) for t in (fc1_weight, fc1_bias, fc2_weight, fc2_bias))
    out, _, _ = _text_adapter_op(as_rows(x, width), w1, b1, w2, b2)
    return out.view(x.shape)
