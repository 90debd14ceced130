"""The fused TED-Adapter: GEMM-in, one stencil kernel, GEMM-out — and a backward of six launches.

Forward, with ``R = B*T*L`` token rows, ``W_in = [W1; W3]`` ``[2Ca, C]`` and the output GEMM's augmented operand
``W_aug = [W2ᵀ; W4ᵀ; b2; b4; 0…]`` ``[2Ca + AUX, C]`` (both read in place from the parameters when they are
packed, see :func:`kernels.packing.pack_pairs` and :func:`kernels.packing.pack_output`):
    z   = x · W_inᵀ                                              [R, 2Ca]         GEMM
    h   = [conv_T(z₁ + b1) + bt,  conv_3x3(Δ_t z₃ + b3) + bs,    [R, 2Ca + AUX]   stencil (CLS row of h₃ = 0)
           1,  [row ≠ CLS],  0…]                                                  and the augmented K's columns
    out = x + h · W_aug          (= x + h₁·W2ᵀ + h₃·W4ᵀ + b2 + [row ≠ CLS]·b4)      [R, C]    GEMM, x its addend
Backward (``z`` and ``h`` saved):
    dh = dout · W_aug[:2Ca]ᵀ                                     GEMM
    dW_aug = hᵀ · dout                                           weight-gradient GEMM: [dW2ᵀ; dW4ᵀ; db2; db4; 0…]
    dz, depthwise kernel/bias and b1/b3 partial sums             stencil backward
    dx = dout + dz · W_in                                        GEMM (skipped when x needs no gradient)
    dW_in = dzᵀ · x                                              weight-gradient GEMM (kernels.primitives.gemm.weight_grad)
    the stencil's partials (and split-K slices) summed in a fixed order, in the parameters' dtype   one launch
With the biases in the augmented K no GEMM needs an epilogue of ours, and their gradients come out of dW_aug:
every GEMM is cuBLAS's where it can be (:data:`GEMM_LIBRARY`). Without the TD branch this is the TE path alone —
on ``[B*T, 1, D]`` the global temporal adapter.

Eager calls run the launchers straight from an ``autograd.Function``; under ``torch.compile`` the same
functions run as two ``torch.library`` custom ops (:func:`kernels.runtime.compilable`), so graphs stay whole.
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import reference
from ..checks import check, check_tensors
from ..dtypes import compute_dtype
from ..packing import AUX_COLUMNS, adjacent, as_rows, dense_taps, output_operand
from ..primitives.gemm import gemm, weight_grad, weight_grad_slices
from ..primitives.reduce import Partials
from ..primitives.stencil import (TD_TAPS, TE_TAPS, StencilPart, partial_width, stencil_backward,
                                  stencil_forward, stencil_programs)
from ..reference import BranchWeights
from ..runtime import can_run_triton, compilable


# Which library runs the four GEMMs that are not weight gradients (z, out, dh, dx): each GEMM where it was measured
# fastest (issue 23). "cublas" (torch.mm / addmm, the residual as addmm's addend): on the H200 (2026-12-04,
# benchmarks/test_gemms.py, replayed from CUDA graphs at ViT-B/16 B=8 T=8) cuBLAS ran every one faster than ours —
# z 25.4 µs against 33.3, the output GEMM with the augmented K 42.7 against our fused-epilogue 52.0, dh 27.1 against
# 32.7, dx 36.8 against 64.2 with its column-sum epilogue. cuBLAS takes operands and result of one dtype: where they
# differ (autocast with an fp32 residual stream) ours runs. "triton": ours always. The weight gradients go by
# kernels.primitives.gemm.WEIGHT_GRAD_LIBRARY.
GEMM_LIBRARY = "cublas"


def _matmul(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype,
            residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``a [M, K] · b [K, N] (+ residual [M, N])`` in ``out_dtype``, multiplied in b's dtype (the compute dtype):
    by cuBLAS where :data:`GEMM_LIBRARY` says so and one dtype serves all, else by our GEMM."""
    if GEMM_LIBRARY == "cublas" and a.dtype == b.dtype == out_dtype and (residual is None or residual.dtype == out_dtype):
        return torch.mm(a, b) if residual is None else torch.addmm(residual, a, b)
    return gemm(a, b, residual=residual, out_dtype=out_dtype, dot=b.dtype)


def _stacked(first: Optional[torch.Tensor], second: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """``[first; second]`` as ``[2, *shape]`` in ``dtype`` — a view when the two are packed
    (:func:`kernels.packing.pack_pairs`, as ``TEDAdapter`` does), else a copy; ``[1, *shape]`` when one is absent."""
    if first is None or second is None:
        return (second if first is None else first).to(dtype).contiguous().unsqueeze(0)
    if first.dtype == dtype and not torch.compiler.is_compiling() and adjacent(first, second):
        return first.as_strided((2, *first.shape), (first.numel(), *first.stride()))
    return torch.stack([first, second]).to(dtype)


def _grad_layout(width: int, c_te: int, c_td: int) -> list[tuple[int, ...]]:
    """Shapes of the flat gradient buffer's pieces, in the order the backward writes them: W1, W3 (the rows
    of W_in), W_aug's ``[dW2ᵀ; dW4ᵀ; db2; db4; 0…]``, TE (kernel, bias, in-bias), TD (kernel, bias, in-bias). An
    absent branch's pieces are empty."""
    return [(c_te, width), (c_td, width), (c_te + c_td + AUX_COLUMNS, width), (c_te, 1, TE_TAPS), (c_te,), (c_te,),
            (c_td, 1, 3, 3), (c_td,), (c_td,)]


def _te_width(te: StencilPart) -> int:
    """Channels of the TE part (0 for a TD-only adapter: the TE branch absent)."""
    return 0 if te.weight is None else te.weight.shape[0]


def _forward_fake(x, w_in, *args):
    inner = x.new_empty(x.shape[0], w_in.shape[0], dtype=w_in.dtype)
    return torch.empty_like(x), inner, x.new_empty(x.shape[0], w_in.shape[0] + AUX_COLUMNS, dtype=w_in.dtype)


@compilable("ted_forward", _forward_fake)
def _forward(
    x: torch.Tensor, w_in: torch.Tensor, w_aug: torch.Tensor, te_in: Optional[torch.Tensor],
    te_w: Optional[torch.Tensor], te_b: Optional[torch.Tensor], td_in: Optional[torch.Tensor],
    td_w: Optional[torch.Tensor], td_b: Optional[torch.Tensor], num_frames: int, tokens: int, grid_h: int,
    grid_w: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x ``[R, C]``, w_in ``[2Ca, C]``, w_aug ``[2Ca + AUX, C]``; each stencil part's in-bias, depthwise weight and
    bias (None for an absent branch) -> out ``[R, C]``, z ``[R, 2Ca]``, h ``[R, 2Ca + AUX]`` (``Ca`` for ``2Ca``
    when a branch is absent)."""
    te, td = StencilPart(te_in, te_w, te_b), StencilPart(td_in, td_w, td_b)
    z = _matmul(x, w_in.t(), w_in.dtype)
    h = stencil_forward(z, num_frames, tokens, (grid_h, grid_w), _te_width(te), te, td, AUX_COLUMNS)
    return _matmul(h, w_aug, x.dtype, residual=x), z, h


def _backward_fake(dout, x, z, h, w_in, w_aug, te_in, te_w, td_in, td_w, num_frames, tokens, grid_h, grid_w,
                   grad_dtype, input_grad):
    c_te = _te_width(StencilPart(te_in, te_w))
    n = sum(torch.Size(s).numel() for s in _grad_layout(x.shape[1], c_te, w_in.shape[0] - c_te))
    return (torch.empty_like(x) if input_grad else x.new_empty(0)), x.new_empty(n, dtype=grad_dtype)


@compilable("ted_backward", _backward_fake)
def _backward(
    dout: torch.Tensor, x: torch.Tensor, z: torch.Tensor, h: torch.Tensor, w_in: torch.Tensor, w_aug: torch.Tensor,
    te_in: Optional[torch.Tensor], te_w: Optional[torch.Tensor], td_in: Optional[torch.Tensor],
    td_w: Optional[torch.Tensor], num_frames: int, tokens: int, grid_h: int, grid_w: int, grad_dtype: torch.dtype,
    input_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> dx ``[R, C]`` (empty without ``input_grad``: the first block's input comes from the frozen stem, and
    its dx GEMM is skipped) and every parameter gradient, flat in ``grad_dtype`` (pieces: :func:`_grad_layout`)."""
    te, td, grid = StencilPart(te_in, te_w), StencilPart(td_in, td_w), (grid_h, grid_w)
    (R, width), c_te = x.shape, _te_width(te)
    inner = w_in.shape[0]
    c_td = inner - c_te
    programs = stencil_programs(R // num_frames)
    split_in = weight_grad_slices(inner, width, R, x.device, z.dtype, x.dtype, grad_dtype)
    split_out = weight_grad_slices(w_aug.shape[0], width, R, x.device, h.dtype, dout.dtype, grad_dtype)
    segments = [(split_in, w_in.numel()), (split_out, w_aug.numel()), (programs, partial_width(c_te, TE_TAPS))]
    if c_td:
        segments.append((programs, partial_width(c_td, TD_TAPS)))
    parts = Partials(segments, x.device, grad_dtype)
    dh = _matmul(dout, w_aug[:inner].t(), z.dtype)
    weight_grad(h, dout, parts, 1, w_aug.shape, w_aug.dtype)
    dz = stencil_backward(dh, z, num_frames, tokens, grid, c_te, te, td, te_part=parts.part(2) if c_te else None,
                          td_part=parts.part(3) if c_td else None)
    dx = _matmul(dz, w_in, x.dtype, residual=dout) if input_grad else x.new_empty(0)
    weight_grad(dz, x, parts, 0, w_in.shape, w_in.dtype)
    return dx, parts.sum()


class _TEDFunction(torch.autograd.Function):
    """Either branch may be absent (its tensors None): TE-only (also the global temporal adapter) or TD-only."""

    @staticmethod
    def forward(ctx, x, w1, b1, wt, bt, w3, b3, ws, bs, w2, b2, w4, b4, num_frames, grid_h, grid_w):
        dtype = compute_dtype(x)
        w_in = _stacked(w1, w3, dtype).flatten(0, 1)
        w_aug = output_operand([(w, b) for w, b in ((w2, b2), (w4, b4)) if w is not None], dtype)
        geometry = (num_frames, x.shape[1], grid_h, grid_w)
        rows = as_rows(x, x.shape[-1])
        out, z, h = _forward(rows, w_in, w_aug, b1, wt, bt, b3, ws, bs, *geometry)
        ctx.save_for_backward(rows, z, h, w_in, w_aug, b1, wt, b3, ws)
        ctx.geometry = geometry
        ctx.grad_dtype = (w1 if w1 is not None else w3).dtype
        ctx.x_shape = x.shape
        ctx.has_te, ctx.has_td = w1 is not None, w3 is not None
        return out.view(x.shape)

    @staticmethod
    def backward(ctx, dout):
        x, z, h, w_in, w_aug, b1, wt, b3, ws = ctx.saved_tensors
        dout = as_rows(dout, x.shape[1])
        input_grad = ctx.needs_input_grad[0]
        dx, flat = _backward(dout, x, z, h, w_in, w_aug, b1, wt, b3, ws, *ctx.geometry, ctx.grad_dtype, input_grad)
        c_te = _te_width(StencilPart(b1, wt))
        c_td = w_in.shape[0] - c_te
        # Depthwise kernel gradients were written in each weight's own layout (contiguous or tap-major).
        conv_strides = (None,) * 3 + (wt.stride() if ctx.has_te else None,) + (None,) * 2 + (
            ws.stride() if ctx.has_td else None,)
        d_w1, d_w3, d_aug, d_wt, d_bt, d_b1, d_ws, d_bs, d_b3 = Partials.split(
            flat, _grad_layout(x.shape[1], c_te, c_td), conv_strides)
        # [dW2ᵀ; dW4ᵀ; db2; db4; 0…]: the weights' gradients transposed views, as pack_output stores the weights
        inner = c_te + c_td
        none4 = (None, None, None, None)
        te = (d_w1, d_b1, d_wt, d_bt, d_aug[:c_te].t(), d_aug[inner]) if ctx.has_te else none4 + (None, None)
        td = (d_w3, d_b3, d_ws, d_bs, d_aug[c_te:inner].t(), d_aug[inner + ctx.has_te]) if ctx.has_td else \
            none4 + (None, None)
        return (dx.view(ctx.x_shape) if input_grad else None, *te[:4], *td[:4], *te[4:], *td[4:], None, None, None)


def _check_branch(name: str, p: BranchWeights, width: int, kernel: tuple[int, ...]) -> int:
    ca = p.fc1_weight.shape[0]
    shapes = ((ca, width), (ca,), (ca, 1, *kernel), (ca,), (width, ca), (width,))
    if tuple(t.shape for t in p) != shapes:  # one comparison in the common case; the details on failure
        for field, shape, t in zip(BranchWeights._fields, shapes, p):
            check(t.shape == shape, f"ted_adapter: {name}.{field} must be {list(shape)} for C = {width}, "
                                    f"got {list(t.shape)}")
    return ca


def _kernel_layout(p: BranchWeights) -> BranchWeights:
    """Biases contiguous and depthwise weights contiguous or tap-major: what the kernels index directly
    (fc weights go through any strides). No copy when they already are."""
    if p.fc1_bias.is_contiguous() and p.conv_bias.is_contiguous() and p.fc2_bias.is_contiguous():
        return p._replace(conv_weight=dense_taps(p.conv_weight))
    return BranchWeights(*(dense_taps(t) if t.dim() > 1 else t.contiguous() for t in p))


def ted_adapter(
    x: torch.Tensor, num_frames: int, grid: tuple[int, int], te: Optional[BranchWeights], td: Optional[BranchWeights]
) -> torch.Tensor:
    """Fused TED-Adapter; same contract as :func:`kernels.reference.ted_adapter`.

    x ``[B*T, 1 + h*w, C]`` (CLS first, frame-major) -> same shape. ``td=None``: the TE path alone (then
    ``grid`` is unused and any token count works); ``te=None``: the TD path alone. The fc weights and the fc2
    biases are read in place when they are stored as :func:`kernels.packing.pack_ted_adapter` lays them out
    (``TEDAdapter`` does), else copied once a call.
    """
    check(te is not None or td is not None, "ted_adapter: give the TE branch, the TD branch or both")
    check_tensors("ted_adapter", x, *(te or ()), *(td or ()))
    check(x.dim() == 3, f"ted_adapter: x must be [B*T, L, C], got {list(x.shape)}")
    check(num_frames >= 1 and x.shape[0] % num_frames == 0,
          f"ted_adapter: x.shape[0] = {x.shape[0]} must be a multiple of num_frames = {num_frames}")
    width, tokens = x.shape[2], x.shape[1]
    ca = _check_branch("te", te, width, (3,)) if te is not None else None
    if td is not None:
        ca_td = _check_branch("td", td, width, (3, 3))
        check(ca is None or ca_td == ca,
              f"ted_adapter: the TE and TD branches must have one width, got {ca} and {ca_td}")
        check(len(grid) == 2 and min(grid) >= 1 and tokens == 1 + grid[0] * grid[1],
              f"ted_adapter: x has L = {tokens} tokens but a CLS token and a {tuple(grid)} patch grid need "
              f"1 + h*w = {1 + grid[0] * grid[1] if len(grid) == 2 else '?'}")
    if not can_run_triton(x, "ted_adapter"):
        return reference.ted_adapter(x, num_frames, grid, te, td)
    none = BranchWeights(*(None,) * 6)
    te = none if te is None else _kernel_layout(te)
    td = none if td is None else _kernel_layout(td)
    return _TEDFunction.apply(x, te.fc1_weight, te.fc1_bias, te.conv_weight, te.conv_bias, td.fc1_weight,
                              td.fc1_bias, td.conv_weight, td.conv_bias, te.fc2_weight, te.fc2_bias, td.fc2_weight,
                              td.fc2_bias, num_frames, grid[0] if td.fc1_weight is not None else 0,
                              grid[1] if td.fc1_weight is not None else 0)


def temporal_adapter(f: torch.Tensor, num_frames: int, weights: BranchWeights) -> torch.Tensor:
    """Global temporal adapter ``f + fc2(conv_T(fc1(f)))`` on frame embeddings ``[B*T, D]`` -> ``[B*T, D]``."""
    check(f.dim() == 2, f"temporal_adapter: f must be [B*T, D], got {list(f.shape)}")
    return ted_adapter(f.unsqueeze(1), num_frames, (0, 0), weights, None).squeeze(1)
