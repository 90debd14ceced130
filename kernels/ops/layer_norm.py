"""LayerNorm at a residual stream's branch point, frozen affine: ``h = x + residual`` (or ``h = x``) and
``y = LN(h)`` in one kernel forward; backward, the input gradient with the stream's own gradient added in the
same kernel:

    forward:   h = x + r;  x̂ = (h − μ)·σ⁻¹;  y = x̂·w + b             (μ, σ⁻¹ per row, kept in fp32)
    backward:  g = dy·w;  dx = dh + σ⁻¹·(g − mean(g) − x̂·mean(g·x̂))  (= dr)

In a block ``x + f(LN(x))`` the stream ``x`` has two consumers, so autograd would sum ``dh`` and the
LayerNorm's input gradient with an add kernel of its own (a read of both and a write a block, each way);
here the op returns ``h`` itself and takes both gradients. Forward, the residual add before a LayerNorm is
the same pass. The affine parameters are frozen (the towers of M2-CLIP): no weight or bias gradients — where
they require one (full fine-tuning) the op runs the reference. Arithmetic in fp32; ``h`` is rounded to its
dtype before it is normalised, as the reference's separate add rounds it.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .. import reference
from ..checks import check, check_tensors
from ..runtime import INTERPRET, can_run_triton, cdiv, compilable, launch, next_power_of_2

MAX_WIDTH = 16384  # one row a program's block at most; wider rows run the reference
_ELEMENTS = 4096  # elements a program: rows × the row width rounded up to a power of two


def _blocks(width: int) -> tuple[int, int, int]:
    """(rows a program, columns a program, warps) for rows of ``width``."""
    block_c = next_power_of_2(width)
    block_m = max(1, min(16, _ELEMENTS // block_c))
    return block_m, block_c, 1 if INTERPRET else min(16, max(4, block_m * block_c // 1024))


@triton.jit
def _forward_kernel(x_ptr, r_ptr, h_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, M, C, eps,
                    HAS_RESIDUAL: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """Grid (cdiv(M, BLOCK_M),); x, r, h, y ``[M, C]`` contiguous; w, b ``[C]``; mean, rstd ``[M]`` fp32."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)  # int64: M·C may pass 2³¹
    cols = tl.arange(0, BLOCK_C)
    row_ok, col_ok = rows < M, cols < C
    mask = row_ok[:, None] & col_ok[None, :]
    offs = rows[:, None] * C + cols[None, :]  # [BLOCK_M, BLOCK_C]
    h = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        h = (h + tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)).to(h_ptr.dtype.element_ty)
        tl.store(h_ptr + offs, h, mask=mask)
        h = h.to(tl.float32)  # normalise the stored (rounded) h
    mean = tl.sum(h, axis=1) / C  # [BLOCK_M]
    centred = tl.where(mask, h - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / C + eps)
    y = centred * rstd[:, None]
    if HAS_WEIGHT:
        y = y * tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        y = y + tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + rows, mean, mask=row_ok)
    tl.store(rstd_ptr + rows, rstd, mask=row_ok)


@triton.jit
def _backward_kernel(h_ptr, dy_ptr, dh_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, M, C,
                     HAS_DH: tl.constexpr, HAS_WEIGHT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """Grid (cdiv(M, BLOCK_M),); h, dy, dh, dx ``[M, C]`` contiguous; w ``[C]``; mean, rstd ``[M]`` fp32."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_C)
    row_ok, col_ok = rows < M, cols < C
    mask = row_ok[:, None] & col_ok[None, :]
    offs = rows[:, None] * C + cols[None, :]  # [BLOCK_M, BLOCK_C]
    mean = tl.load(mean_ptr + rows, mask=row_ok, other=0.0)
    rstd = tl.load(rstd_ptr + rows, mask=row_ok, other=0.0)
    h = tl.load(h_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    xhat = tl.where(mask, (h - mean[:, None]) * rstd[:, None], 0.0)
    g = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_WEIGHT:
        g = g * tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    mean_g = tl.sum(g, axis=1) / C
    mean_gx = tl.sum(g * xhat, axis=1) / C
    dx = (g - mean_g[:, None] - xhat * mean_gx[:, None]) * rstd[:, None]
    if HAS_DH:
        dx = dx + tl.load(dh_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _forward_fake(x, residual, weight, bias, eps):
    h = x if residual is None else torch.empty_like(x, dtype=torch.result_type(x, residual))
    stats = x.new_empty(x.shape[0], dtype=torch.float32)
    return (x.new_empty(0) if residual is None else h), torch.empty_like(h), stats, torch.empty_like(stats)


@compilable("add_layer_norm_forward", _forward_fake)
def _forward(x: torch.Tensor, residual: Optional[torch.Tensor], weight: Optional[torch.Tensor],
             bias: Optional[torch.Tensor], eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Contiguous rows x (and residual) ``[M, C]`` -> h ``[M, C]`` (empty without a residual: h is x), y ``[M, C]``,
    mean and rstd ``[M]`` fp32."""
    (M, C), has_residual = x.shape, residual is not None
    h = torch.empty_like(x, dtype=torch.result_type(x, residual)) if has_residual else x
    y = torch.empty_like(h)
    mean = x.new_empty(M, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    if M:
        block_m, block_c, warps = _blocks(C)
        launch(_forward_kernel, (cdiv(M, block_m),), x, residual, h, weight, bias, y, mean, rstd, M, C, eps,
               HAS_RESIDUAL=has_residual, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
               BLOCK_M=block_m, BLOCK_C=block_c, name="layer_norm_fwd", num_warps=warps)
    return (h if has_residual else x.new_empty(0)), y, mean, rstd


def _backward_fake(h, dy, dh, weight, mean, rstd):
    return torch.empty_like(h)


@compilable("add_layer_norm_backward", _backward_fake)
def _backward(h: torch.Tensor, dy: torch.Tensor, dh: Optional[torch.Tensor], weight: Optional[torch.Tensor],
              mean: torch.Tensor, rstd: torch.Tensor) -> torch.Tensor:
    """dx ``[M, C]`` (h's dtype) = dh + the LayerNorm's input gradient, from contiguous h, dy, dh ``[M, C]``."""
    M, C = h.shape
    dx = torch.empty_like(h)
    if M:
        block_m, block_c, warps = _blocks(C)
        launch(_backward_kernel, (cdiv(M, block_m),), h, dy, dh, weight, mean, rstd, dx, M, C,
               HAS_DH=dh is not None, HAS_WEIGHT=weight is not None, BLOCK_M=block_m, BLOCK_C=block_c,
               name="layer_norm_bwd", num_warps=warps)
    return dx


class _AddLayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, weight, bias, eps):
        shape, width = x.shape, x.shape[-1]
        rows = x.contiguous().view(-1, width)
        res = None if residual is None else residual.contiguous().view(-1, width)
        h, y, mean, rstd = _forward(rows, res, weight, bias, eps)
        h = rows if res is None else h
        ctx.save_for_backward(h, weight, mean, rstd)
        ctx.has_residual = res is not None
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no kernel reads zeros
        # Without a residual h is x: returned as a view, so that its other consumers' gradient reaches backward.
        return (x.view_as(x) if res is None else h.view(shape)), y.view(shape)

    @staticmethod
    def backward(ctx, dh, dy):
        h, weight, mean, rstd = ctx.saved_tensors
        width = h.shape[-1]
        if dy is None:
            dx = dh
        else:
            rows = lambda t: None if t is None else t.contiguous().view(-1, width)  # noqa: E731
            dx = _backward(h, rows(dy), rows(dh), weight, mean, rstd).view(dy.shape)
        return dx, (dx if ctx.has_residual else None), None, None, None


def add_layer_norm(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor], eps: float,
                   residual: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused ``h = x + residual``, ``y = LayerNorm(h)``; same contract as :func:`kernels.reference.add_layer_norm`.

    x, residual ``[..., C]``; weight, bias ``[C]`` or None -> h, y ``[..., C]`` in h's dtype.
    """
    check_tensors("add_layer_norm", x, residual)
    width = x.shape[-1]
    if residual is not None and residual.shape != x.shape:  # messages built only on failure: a hot path
        check(False, f"add_layer_norm: residual must have x's shape {list(x.shape)}, got {list(residual.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and not (t.shape == (width,) and t.is_floating_point() and t.device == x.device):
            check(False, f"add_layer_norm: {name} must be a float [{width}] tensor on {x.device}, got "
                         f"{t.dtype} {list(t.shape)} on {t.device}")
    affine_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (weight, bias))
    if affine_grad or width > MAX_WIDTH or not can_run_triton(x, "add_layer_norm"):
        return reference.add_layer_norm(x, weight, bias, eps, residual)
    contiguous = lambda t: None if t is None else t.contiguous()  # noqa: E731
    return _AddLayerNormFunction.apply(x, residual, contiguous(weight), contiguous(bias), float(eps))
