"""The fused TED-Adapter (DESIGN.md §2): GEMM-in, one stencil kernel, GEMM-out — and the backward.

Forward, with ``R = B*T*L`` token rows (``W_in = [W1; W3]``, ``W_out = [W2, W4]``, ``Ca`` each half):
    z   = x · W_inᵀ                                  [R, 2Ca]   GEMM, x read once
    h   = [conv_T(z₁ + b1) + bt,  conv_3x3(Δ_t z₃ + b3) + bs]   [R, 2Ca]   stencil (CLS row of h₃ = 0)
    out = x + h · W_outᵀ + b2 + [row ≠ CLS]·b4       [R, C]     GEMM, bias and residual in the epilogue
Backward:
    dh = dout · W_out;  dW_out = doutᵀ · h;  db2 = Σ dout;  db4 = Σ_patch rows dout
    dz, d(depthwise kernels and biases), db1, db3 = stencil backward (deterministic reductions)
    dx = dout + dz · W_in  (residual in the epilogue);  dW_in = dzᵀ · x
Without the TD branch this is the TE path alone — on ``[B*T, 1, D]`` the global temporal adapter.
``z`` and ``h`` are saved for the backward.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import reference
from .gemm import gemm
from .reference import BranchWeights
from .stencil import stencil_backward, stencil_forward
from .utils import as_rows, can_run_triton, check, check_tensors, compute_dtype


@torch.library.custom_op("m2clip_fast::ted_adapter", mutates_args=())
def _ted_op(
    x: torch.Tensor, num_frames: int, tokens: int, grid_h: int, grid_w: int,
    w_in: torch.Tensor, te_in_bias: torch.Tensor, te_weight: torch.Tensor, te_bias: torch.Tensor,
    td_in_bias: Optional[torch.Tensor], td_weight: Optional[torch.Tensor], td_bias: Optional[torch.Tensor],
    w_out: torch.Tensor, out_bias: torch.Tensor, patch_bias: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c_te = te_weight.shape[0]
    z, _ = gemm(x, w_in.t(), out_dtype=w_in.dtype, dot=w_in.dtype)
    h = stencil_forward(z, num_frames, tokens, (grid_h, grid_w), c_te, (te_in_bias, te_weight, te_bias),
                        (td_in_bias, td_weight, td_bias), td_diff=True, td_spatial=True, has_cls=True)
    out, _ = gemm(h, w_out.t(), bias=out_bias, bias2=patch_bias, bias2_period=tokens, residual=x,
                  out_dtype=x.dtype, dot=w_out.dtype)
    return out, z, h


@_ted_op.register_fake
def _(x, num_frames, tokens, grid_h, grid_w, w_in, *args):
    inner = x.new_empty(x.shape[0], w_in.shape[0], dtype=w_in.dtype)
    return torch.empty_like(x), inner, torch.empty_like(inner)


@torch.library.custom_op("m2clip_fast::ted_adapter_backward", mutates_args=())
def _ted_backward_op(
    dout: torch.Tensor, x: torch.Tensor, z: torch.Tensor, h: torch.Tensor, w_in: torch.Tensor, w_out: torch.Tensor,
    te_in_bias: torch.Tensor, te_weight: torch.Tensor, td_in_bias: Optional[torch.Tensor],
    td_weight: Optional[torch.Tensor], num_frames: int, tokens: int, grid_h: int, grid_w: int,
) -> list[torch.Tensor]:
    """-> [dx, dW_in, dW_out, d_out_bias, d_patch_bias, d_te(w, b, in_b), d_td(w, b, in_b)] (fp32 weights)."""
    c_te, width = te_weight.shape[0], x.shape[1]
    dh, _ = gemm(dout, w_out, out_dtype=z.dtype, dot=w_out.dtype)
    dw_out, _ = gemm(dout.t(), h, out_dtype=torch.float32, dot=w_out.dtype)
    d_out_bias = dout.sum(0, dtype=torch.float32)  # fp32 accumulation, no fp32 copy of dout
    dz, te, td = stencil_backward(dh, z, num_frames, tokens, (grid_h, grid_w), c_te, (te_in_bias, te_weight),
                                  (td_in_bias, td_weight), td_diff=True, td_spatial=True, has_cls=True)
    dx, _ = gemm(dz, w_in, residual=dout, out_dtype=x.dtype, dot=w_in.dtype)
    dw_in, _ = gemm(dz.t(), x, out_dtype=torch.float32, dot=w_in.dtype)
    if td:
        d_patch_bias = d_out_bias - dout.view(-1, tokens, width)[:, 0].sum(0, dtype=torch.float32)  # all rows − CLS rows
    else:
        d_patch_bias, td = dout.new_empty(0), [dout.new_empty(0) for _ in range(3)]
    return [dx, dw_in, dw_out, d_out_bias, d_patch_bias, *te, *td]


@_ted_backward_op.register_fake
def _(dout, x, z, h, w_in, w_out, te_in_bias, te_weight, td_in_bias, td_weight, *geometry):
    f32 = dict(device=x.device, dtype=torch.float32)
    c_te, c_td, width = te_weight.shape[0], w_in.shape[0] - te_weight.shape[0], x.shape[1]
    te = [torch.empty(c_te, 3, **f32), torch.empty(c_te, **f32), torch.empty(c_te, **f32)]
    td = [torch.empty(c_td, 9, **f32), torch.empty(c_td, **f32), torch.empty(c_td, **f32)] if c_td else \
        [torch.empty(0, **f32) for _ in range(3)]
    patch = torch.empty(width if c_td else 0, **f32)
    return [torch.empty_like(x), torch.empty(w_in.shape, **f32), torch.empty(w_out.shape, **f32),
            torch.empty(width, **f32), patch, *te, *td]


def _ted_setup(ctx, inputs, output):
    x, num_frames, tokens, grid_h, grid_w, w_in, te_in, te_w, te_b, td_in, td_w, td_b, w_out, b_out, b_patch = inputs
    _, z, h = output
    ctx.save_for_backward(x, z, h, w_in, w_out, te_in, te_w, td_in, td_w)
    ctx.geometry = (num_frames, tokens, grid_h, grid_w)
    ctx.has_td = td_w is not None
    ctx.dtype = w_in.dtype


def _ted_backward(ctx, dout, _dz, _dh):
    x, z, h, w_in, w_out, te_in, te_w, td_in, td_w = ctx.saved_tensors
    grads = _ted_backward_op(dout.contiguous(), x, z, h, w_in, w_out, te_in, te_w, td_in, td_w, *ctx.geometry)
    dx, dw_in, dw_out, db_out, db_patch, te_dw, te_db, te_din, td_dw, td_db, td_din = grads
    cast = lambda g: g.to(ctx.dtype) if ctx.has_td else None  # noqa: E731
    return (
        dx, None, None, None, None,
        dw_in.to(ctx.dtype), te_din.to(ctx.dtype), te_dw.to(ctx.dtype), te_db.to(ctx.dtype),
        cast(td_din), cast(td_dw), cast(td_db),
        dw_out.to(ctx.dtype), db_out.to(ctx.dtype), cast(db_patch),
    )


_ted_op.register_autograd(_ted_backward, setup_context=_ted_setup)


def _check_branch(name: str, p: BranchWeights, width: int, kernel: tuple[int, ...]) -> int:
    ca = p.fc1_weight.shape[0]
    shapes = {
        "fc1_weight": (ca, width), "fc1_bias": (ca,), "conv_weight": (ca, 1, *kernel), "conv_bias": (ca,),
        "fc2_weight": (width, ca), "fc2_bias": (width,),
    }
    for field, shape in shapes.items():
        got = tuple(getattr(p, field).shape)
        check(got == shape, f"ted_adapter: {name}.{field} must be {list(shape)} for C = {width}, got {list(got)}")
    return ca


def ted_adapter(
    x: torch.Tensor, num_frames: int, grid: tuple[int, int], te: BranchWeights, td: Optional[BranchWeights]
) -> torch.Tensor:
    """Fused TED-Adapter; same contract as :func:`kernels.reference.ted_adapter`.

    x ``[B*T, 1 + h*w, C]`` (CLS first, frame-major) -> same shape. ``td=None``: the TE path alone (then
    ``grid`` is unused and any token count works).
    """
    check_tensors("ted_adapter", x, *te, *(td or ()))
    check(x.dim() == 3, f"ted_adapter: x must be [B*T, L, C], got {list(x.shape)}")
    check(num_frames >= 1 and x.shape[0] % num_frames == 0,
          f"ted_adapter: x.shape[0] = {x.shape[0]} must be a multiple of num_frames = {num_frames}")
    width, tokens = x.shape[2], x.shape[1]
    _check_branch("te", te, width, (3,))
    if td is not None:
        _check_branch("td", td, width, (3, 3))
        check(len(grid) == 2 and min(grid) >= 1 and tokens == 1 + grid[0] * grid[1],
              f"ted_adapter: x has L = {tokens} tokens but a CLS token and a {tuple(grid)} patch grid need "
              f"1 + h*w = {1 + grid[0] * grid[1] if len(grid) == 2 else '?'}")
    if not can_run_triton(x, "ted_adapter"):
        return reference.ted_adapter(x, num_frames, grid, te, td)
    dtype = compute_dtype(x)
    te = BranchWeights(*(t.to(dtype) for t in te))
    td = None if td is None else BranchWeights(*(t.to(dtype) for t in td))
    w_in = te.fc1_weight if td is None else torch.cat([te.fc1_weight, td.fc1_weight])
    w_out = te.fc2_weight if td is None else torch.cat([te.fc2_weight, td.fc2_weight], dim=1)
    out, _, _ = _ted_op(
        as_rows(x, width), num_frames, tokens, grid[0] if td else 0, grid[1] if td else 0,
        w_in, te.fc1_bias, te.conv_weight.reshape(-1, 3), te.conv_bias,
        None if td is None else td.fc1_bias, None if td is None else td.conv_weight.reshape(-1, 9),
        None if td is None else td.conv_bias,
        w_out, te.fc2_bias, None if td is None else td.fc2_bias,
    )
    return out.view(x.shape)


def temporal_adapter(f: torch.Tensor, num_frames: int, weights: BranchWeights) -> torch.Tensor:
    """Global temporal adapter ``f + fc2(conv_T(fc1(f)))`` on frame embeddings ``[B*T, D]`` -> ``[B*T, D]``."""
    check(f.dim() == 2, f"temporal_adapter: f must be [B*T, D], got {list(f.shape)}")
    return ted_adapter(f.unsqueeze(1), num_frames, (0, 0), weights, None).squeeze(1)
