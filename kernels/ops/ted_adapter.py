"""The fused TED-Adapter: GEMM-in, one stencil kernel, GEMM-out — and a backward of six launches.

Forward, with ``R = B*T*L`` token rows, ``W_in = [W1; W3]`` ``[2Ca, C]`` and ``W_out = [W2, W4]``
``[C, 2Ca]`` (read in place from the parameters when they are packed, see :func:`pack_branches`):
    z   = x · W_inᵀ                                              [R, 2Ca]   GEMM (cuBLAS, or ours), x read once
    h   = [conv_T(z₁ + b1) + bt,  conv_3x3(Δ_t z₃ + b3) + bs]     [R, 2Ca]   stencil (CLS row of h₃ = 0)
    out = x + h · W_outᵀ + b2 + [row ≠ CLS]·b4                   [R, C]     GEMM; biases, residual in the epilogue
Backward (``z`` and ``h`` saved):
    dh = dout · W_out                                            GEMM
    dW_out = doutᵀ · h                                           weight-gradient GEMM (cuBLAS, or ours split-K), as [W2 | W4]
    dz, depthwise kernel/bias and b1/b3 partial sums             stencil backward
    dx = dout + dz · W_in; column sums of dout → b2, b4          GEMM; residual and bias partials in the epilogue
    dW_in = dzᵀ · x                                              weight-gradient GEMM (kernels.primitives.gemm.weight_grad)
    every partial summed in a fixed order, in the parameters' dtype      one launch (:mod:`kernels.primitives.reduce`)
Without the TD branch this is the TE path alone — on ``[B*T, 1, D]`` the global temporal adapter.

Eager calls run the launchers straight from an ``autograd.Function``; under ``torch.compile`` the same
functions run as two ``torch.library`` custom ops (:func:`kernels.runtime.compilable`), so graphs stay whole.
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import reference
from ..checks import check, check_tensors
from ..dtypes import compute_dtype
from ..packing import adjacent, as_rows, dense_taps
from ..primitives.gemm import Blocks, colsum_rows, gemm, weight_grad, weight_grad_slices
from ..primitives.reduce import Partials
from ..primitives.stencil import (TD_TAPS, TE_TAPS, StencilPart, partial_width, stencil_backward,
                                  stencil_forward, stencil_programs)
from ..reference import BranchWeights
from ..runtime import can_run_triton, compilable


# Which library runs the forward GEMM z = x·W_inᵀ: each GEMM where it was measured fastest (issue 23). "cublas"
# (torch.mm): on the H200 (2026-12-04, benchmarks/test_gemms.py, replayed from CUDA graphs at ViT-B/16 B=8 T=8) it
# ran z in 25.4 µs against our 33.3; nothing is fused into z to lose. "triton": ours. The rest stay ours for now
# (docs/DESIGN.md §2.1): the output GEMM and dh (cuBLAS 9 and 5.6 µs faster, but only with a copy each), and dx,
# whose epilogue sums dout's columns for b2/b4 (cuBLAS's addmm ran 36.8 µs against our 64.2, but the sums would
# then cost a pass over dout of their own, 0.93 GB a vit-b16-k400 B=32 step: over issue 21's 100 GB budget).
# The weight gradients go by kernels.primitives.gemm.WEIGHT_GRAD_LIBRARY.
Z_GEMM_LIBRARY = "cublas"


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
    of W_in), W2, W4 (the blocks of W_out), TE (kernel, bias, in-bias), TD (kernel, bias, in-bias), b2, b4.
    An absent branch's pieces are empty."""
    return [(c_te, width), (c_td, width), (width, c_te), (width, c_td), (c_te, 1, TE_TAPS), (c_te,), (c_te,),
            (c_td, 1, 3, 3), (c_td,), (c_td,), (width,), (width if c_td else 0,)]


def _te_width(te: StencilPart) -> int:
    """Channels of the TE part (0 for a TD-only adapter: the TE branch absent)."""
    return 0 if te.weight is None else te.weight.shape[0]


def _forward_fake(x, w_in, *args):
    inner = x.new_empty(x.shape[0], w_in.shape[0], dtype=w_in.dtype)
    return torch.empty_like(x), inner, torch.empty_like(inner)


@compilable("ted_forward", _forward_fake)
def _forward(
    x: torch.Tensor, w_in: torch.Tensor, w_out: torch.Tensor, te_in: Optional[torch.Tensor],
    te_w: Optional[torch.Tensor], te_b: Optional[torch.Tensor], td_in: Optional[torch.Tensor],
    td_w: Optional[torch.Tensor], td_b: Optional[torch.Tensor], b2: Optional[torch.Tensor],
    b4: Optional[torch.Tensor], num_frames: int, tokens: int, grid_h: int, grid_w: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x ``[R, C]``, w_in ``[2Ca, C]``, w_out ``[2, C, Ca]``; each stencil part's in-bias, depthwise weight and
    bias (None for an absent branch) -> out ``[R, C]``, z, h ``[R, 2Ca]`` (``Ca`` and one block when a branch is
    absent)."""
    te, td = StencilPart(te_in, te_w, te_b), StencilPart(td_in, td_w, td_b)
    if Z_GEMM_LIBRARY == "cublas" and x.dtype == w_in.dtype:  # cuBLAS takes operands and result of one dtype
        z = torch.mm(x, w_in.t())
    else:
        z = gemm(x, w_in.t(), out_dtype=w_in.dtype, dot=w_in.dtype)
    h = stencil_forward(z, num_frames, tokens, (grid_h, grid_w), _te_width(te), te, td)
    out = gemm(h, Blocks(w_out).T, bias=b2, bias2=b4, bias2_period=tokens, residual=x, out_dtype=x.dtype,
               dot=w_out.dtype)
    return out, z, h


def _backward_fake(dout, x, z, h, w_in, w_out, te_in, te_w, td_in, td_w, num_frames, tokens, grid_h, grid_w,
                   grad_dtype, input_grad):
    c_te = _te_width(StencilPart(te_in, te_w))
    n = sum(torch.Size(s).numel() for s in _grad_layout(x.shape[1], c_te, w_in.shape[0] - c_te))
    return (torch.empty_like(x) if input_grad else x.new_empty(0)), x.new_empty(n, dtype=grad_dtype)


@compilable("ted_backward", _backward_fake)
def _backward(
    dout: torch.Tensor, x: torch.Tensor, z: torch.Tensor, h: torch.Tensor, w_in: torch.Tensor, w_out: torch.Tensor,
    te_in: Optional[torch.Tensor], te_w: Optional[torch.Tensor], td_in: Optional[torch.Tensor],
    td_w: Optional[torch.Tensor], num_frames: int, tokens: int, grid_h: int, grid_w: int, grad_dtype: torch.dtype,
    input_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> dx ``[R, C]`` (empty without ``input_grad``) and every parameter gradient, flat in ``grad_dtype``
    (pieces: :func:`_grad_layout`).

    Without ``input_grad`` (the first block's input comes from the frozen stem) the dx GEMM is skipped; the
    b2/b4 gradients it would have summed in its epilogue come from one pass over ``dout`` into per-token
    partials instead."""
    te, td, grid = StencilPart(te_in, te_w), StencilPart(td_in, td_w), (grid_h, grid_w)
    (R, width), c_te = x.shape, _te_width(te)
    c_td = w_in.shape[0] - c_te
    programs = stencil_programs(R // num_frames)
    split_in = weight_grad_slices(w_in.shape[0], width, R, x.device, z.dtype, x.dtype, grad_dtype)
    split_out = weight_grad_slices(width, w_in.shape[0], R, x.device, dout.dtype, h.dtype, grad_dtype)
    segments = [(split_in, w_in.numel()), (split_out, w_out.numel()), (programs, partial_width(c_te, TE_TAPS))]
    if c_td:
        segments.append((programs, partial_width(c_td, TD_TAPS)))
    bias_segment = len(segments)
    if input_grad:  # the dx GEMM's epilogue writes each row tile's column sums of dout, b2 | b4 side by side
        segments.append((colsum_rows(R), width * (2 if c_td else 1)))
    else:  # one pass over dout writes its per-token column sums: b2 sums them all, b4 all but the CLS token's
        segments += [(tokens, width)] + ([(tokens - 1, width, (bias_segment, 1))] if c_td else [])
    parts = Partials(segments, x.device, grad_dtype)
    bias_sums = parts.part(bias_segment)
    dh = gemm(dout, Blocks(w_out), out_dtype=z.dtype, dot=w_out.dtype)
    weight_grad(dout, h, parts, 1, w_out.shape, w_out.dtype)
    dz = stencil_backward(dh, z, num_frames, tokens, grid, c_te, te, td, te_part=parts.part(2) if c_te else None,
                          td_part=parts.part(3) if c_td else None)
    if input_grad:
        dx = gemm(dz, w_in, residual=dout, colsum="residual", colsum_gated=c_td > 0, bias2_period=tokens,
                  colsum_out=bias_sums, out_dtype=x.dtype, dot=w_in.dtype)
    else:
        dx = x.new_empty(0)
        torch.sum(dout.reshape(-1, tokens, width), 0, dtype=torch.float32, out=bias_sums)  # [tokens, C]
    weight_grad(dz, x, parts, 0, w_in.shape, w_in.dtype)
    return dx, parts.sum()


class _TEDFunction(torch.autograd.Function):
    """Either branch may be absent (its tensors None): TE-only (also the global temporal adapter) or TD-only."""

    @staticmethod
    def forward(ctx, x, w1, b1, wt, bt, w3, b3, ws, bs, w2, b2, w4, b4, num_frames, grid_h, grid_w):
        dtype = compute_dtype(x)
        w_in = _stacked(w1, w3, dtype).flatten(0, 1)
        w_out = _stacked(w2, w4, dtype)
        geometry = (num_frames, x.shape[1], grid_h, grid_w)
        rows = as_rows(x, x.shape[-1])
        out, z, h = _forward(rows, w_in, w_out, b1, wt, bt, b3, ws, bs, b2, b4, *geometry)
        ctx.save_for_backward(rows, z, h, w_in, w_out, b1, wt, b3, ws)
        ctx.geometry = geometry
        ctx.grad_dtype = (w1 if w1 is not None else w3).dtype
        ctx.x_shape = x.shape
        ctx.has_te, ctx.has_td = w1 is not None, w3 is not None
        return out.view(x.shape)

    @staticmethod
    def backward(ctx, dout):
        x, z, h, w_in, w_out, b1, wt, b3, ws = ctx.saved_tensors
        dout = as_rows(dout, x.shape[1])
        input_grad = ctx.needs_input_grad[0]
        dx, flat = _backward(dout, x, z, h, w_in, w_out, b1, wt, b3, ws, *ctx.geometry, ctx.grad_dtype, input_grad)
        c_te = _te_width(StencilPart(b1, wt))
        # Depthwise kernel gradients were written in each weight's own layout (contiguous or tap-major).
        conv_strides = (None,) * 4 + (wt.stride() if ctx.has_te else None,) + (None,) * 2 + (
            ws.stride() if ctx.has_td else None,)
        d_w1, d_w3, d_w2, d_w4, d_wt, d_bt, d_b1, d_ws, d_bs, d_b3, d_b2, d_b4 = Partials.split(
            flat, _grad_layout(x.shape[1], c_te, w_in.shape[0] - c_te), conv_strides)
        none4 = (None, None, None, None)
        te = (d_w1, d_b1, d_wt, d_bt) if ctx.has_te else none4
        td = (d_w3, d_b3, d_ws, d_bs) if ctx.has_td else none4
        return (dx.view(ctx.x_shape) if input_grad else None, *te, *td, d_w2 if ctx.has_te else None, d_b2 if ctx.has_te else None,
                d_w4 if ctx.has_td else None, d_b4 if ctx.has_td else None, None, None, None)


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
    ``grid`` is unused and any token count works); ``te=None``: the TD path alone. The two branches' fc
    weights are read in place when they are stored back to back (:func:`kernels.packing.pack_pairs`;
    ``TEDAdapter`` does), else copied.
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
