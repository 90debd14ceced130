"""``linear``: ``act(x·Wᵀ + b) + residual`` as one GEMM with its epilogue, forward and backward."""
from __future__ import annotations

from typing import Optional

import torch

from ..utils import can_run_triton, check, check_tensors, compute_dtype
from .gemm import gemm


def _forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], residual: Optional[torch.Tensor],
             gelu: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x2 = x.reshape(-1, x.shape[-1])
    res2 = None if residual is None else residual.reshape(-1, weight.shape[0])
    pre = x2.new_empty(x2.shape[0], weight.shape[0]) if gelu else x.new_empty(0)
    out = gemm(x2, weight.t(), bias=bias, residual=res2, epilogue="gelu" if gelu else "none",
               pre=pre if gelu else None)
    shape = (*x.shape[:-1], weight.shape[0])
    return out.view(shape), (pre.view(shape) if gelu else pre)


def _backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, pre: torch.Tensor, has_bias: bool,
              gelu: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = grad.reshape(-1, weight.shape[0])
    if gelu:  # dL/d(pre) = grad · GELU'(pre), elementwise
        g = torch.ops.aten.gelu_backward(g, pre.reshape(g.shape))
    dx = gemm(g, weight)
    dw = gemm(g.t(), x.reshape(-1, x.shape[-1]), out_dtype=weight.dtype, dot=x.dtype)
    db = g.sum(0, dtype=torch.float32).to(weight.dtype) if has_bias else weight.new_empty(0)
    return dx.view(x.shape), dw, db


@torch.library.custom_op("m2clip_fast::linear_forward", mutates_args=())
def _forward_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], residual: Optional[torch.Tensor],
                gelu: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _forward(x, weight, bias, residual, gelu)


@_forward_op.register_fake
def _(x, weight, bias, residual, gelu):
    shape = (*x.shape[:-1], weight.shape[0])
    return x.new_empty(shape), (x.new_empty(shape) if gelu else x.new_empty(0))


@torch.library.custom_op("m2clip_fast::linear_backward", mutates_args=())
def _backward_op(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, pre: torch.Tensor, has_bias: bool,
                 gelu: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(grad, x, weight, pre, has_bias, gelu)


@_backward_op.register_fake
def _(grad, x, weight, pre, has_bias, gelu):
    return torch.empty_like(x), torch.empty_like(weight), weight.new_empty(weight.shape[0] if has_bias else 0)


class _LinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, residual, gelu):
        run = _forward_op if torch.compiler.is_compiling() else _forward
        out, pre = run(x, weight, bias, residual, gelu)
        ctx.save_for_backward(x, weight, pre)
        ctx.has_bias, ctx.has_res, ctx.gelu = bias is not None, residual is not None, gelu
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, pre = ctx.saved_tensors
        run = _backward_op if torch.compiler.is_compiling() else _backward
        dx, dw, db = run(grad.contiguous(), x, weight, pre, ctx.has_bias, ctx.gelu)
        return dx, dw, (db if ctx.has_bias else None), (grad if ctx.has_res else None), None


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: str = "none",
    residual: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``act(x·weightᵀ + bias) + residual`` in one fused GEMM; ``activation`` is ``"none"`` or ``"gelu"``
    (exact). x ``[..., K]``, weight ``[N, K]``, bias ``[N]``, residual ``[..., N]`` -> ``[..., N]``."""
    check(activation in ("none", "gelu"), f"linear: activation must be 'none' or 'gelu', got {activation!r}")
    check_tensors("linear", x, weight, bias, residual)
    check(weight.dim() == 2 and x.dim() >= 1 and x.shape[-1] == weight.shape[1],
          f"linear: x [..., K] and weight [N, K] must agree on K; got {list(x.shape)} and {list(weight.shape)}")
    check(bias is None or tuple(bias.shape) == (weight.shape[0],), f"linear: bias must be [{weight.shape[0]}]")
    check(residual is None or tuple(residual.shape) == (*x.shape[:-1], weight.shape[0]),
          f"linear: residual must be {[*x.shape[:-1], weight.shape[0]]}")
    gelu = activation == "gelu"
    if not can_run_triton(x, "linear"):
        y = torch.nn.functional.linear(x, weight, bias)
        y = torch.nn.functional.gelu(y) if gelu else y
        return y if residual is None else y + residual
    dtype = compute_dtype(x)
    x, weight, bias = x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)
    return _LinearFunction.apply(x, weight, bias, residual, gelu)
