"""The TED-Adapter's stencil: temporal depthwise conv, temporal difference and 3×3 spatial depthwise
conv over a token grid, in one parametrised kernel pair (forward, backward); one launch covers both parts.

Rows are tokens in frame-major order, ``r = (b*T + t)*L + l``; a row holds ``C_TE + C_TD`` channels:
- the **TE part** (columns ``[0, C_TE)``): ``h = conv_T(z + in_bias) + bias``, 3 taps over frames
  (zero padding applies to ``z + in_bias``);
- the **TD part** (columns ``[C_TE, C_TE + C_TD)``): ``g = Δ_t z + in_bias`` (``Δ_t z_0 = 0``, optional),
  ``h = conv_3x3(g) + bias`` over the ``GH×GW`` patch grid (optional; else ``h = g``); with a CLS token
  (``l = 0``) its TD output is 0 and patches are ``l = 1 + i*GW + j``.
Each row gathers its neighbours as a ``[TAPS, BLOCK_C]`` tile (TE: 3 taps padded to 4; TD: 9 padded
to 16), so forward, transposed conv and weight gradients are tile products. Weight and bias gradients
are reduced per program into a partial buffer, then summed in a fixed order on the host: deterministic,
no atomics.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from . import reference
from .utils import INTERPRET, as_rows, can_run_triton, cdiv, check, check_tensors, compute_dtype
from .utils import record_launch

TE_TAPS, TD_TAPS = tl.constexpr(4), tl.constexpr(16)  # padded tap counts (3 and 9 used)
_ROWS_PER_PROGRAM = 8 if INTERPRET else 32


@triton.jit
def _taps(r, t, l, T, L, GH, GW, SIGN: tl.constexpr, IS_TE: tl.constexpr, HAS_CLS: tl.constexpr,
          TD_SPATIAL: tl.constexpr, TAPS: tl.constexpr):
    """Rows of row ``r``'s neighbours at ``SIGN * offset`` (+1: conv gather, -1: transposed) and their
    validity, both ``[TAPS]``."""
    q = tl.arange(0, TAPS)
    if IS_TE:
        d = (q - 1) * SIGN
        tt = t + d
        ok = (q < 3) & (tt >= 0) & (tt < T)
        rows = r + d * L
    else:
        di = (q // 3 - 1) * SIGN
        dj = (q % 3 - 1) * SIGN
        p = l - HAS_CLS
        i = p // GW
        j = p - i * GW
        ii, jj = i + di, j + dj
        used = (q < 9) if TD_SPATIAL else (q == 4)
        ok = used & (p >= 0) & (ii >= 0) & (ii < GH) & (jj >= 0) & (jj < GW)
        rows = r + di * GW + dj
    return rows, ok


@triton.jit
def _gather(z_ptr, rows, ok, t, L, stride_z, cols, cmask, in_bias, DIFF: tl.constexpr):
    """``[TAPS, BLOCK_C]`` tile of ``Δ_t z + in_bias`` (or ``z + in_bias``) at ``rows``, zero where invalid."""
    mask = ok[:, None] & cmask[None, :]
    v = tl.load(z_ptr + rows[:, None] * stride_z + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if DIFF:  # neighbours share row r's frame t; Δ_t at t = 0 is 0
        prev = tl.load(z_ptr + (rows - L)[:, None] * stride_z + cols[None, :], mask=mask & (t > 0), other=0.0)
        v = tl.where(t > 0, v - prev.to(tl.float32), 0.0)
    return tl.where(mask, v + in_bias[None, :], 0.0)


@triton.jit
def _weight_tile(w_ptr, cols, cmask, IS_TE: tl.constexpr, TD_SPATIAL: tl.constexpr, TAPS: tl.constexpr):
    """Depthwise kernel as ``[TAPS, BLOCK_C]`` (weights stored ``[C, 3]`` / ``[C, 9]``); the identity tap
    when the TD part has no spatial conv."""
    q = tl.arange(0, TAPS)
    if IS_TE or TD_SPATIAL:
        n = 3 if IS_TE else 9
        w = tl.load(w_ptr + cols[None, :] * n + q[:, None], mask=(q[:, None] < n) & cmask[None, :], other=0.0)
        return w.to(tl.float32)
    return tl.where((q[:, None] == 4) & cmask[None, :], 1.0, 0.0)


@triton.jit
def _vector(ptr, cols, cmask, PRESENT: tl.constexpr):
    if PRESENT:
        return tl.load(ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    return tl.zeros(cols.shape, dtype=tl.float32)


@triton.jit
def _part_forward(
    r, pid_c, z_ptr, h_ptr, in_bias_ptr, w_ptr, bias_ptr, T, L, GH, GW, C, COL, stride_z, stride_h,
    IS_TE: tl.constexpr, HAS_IN_BIAS: tl.constexpr, HAS_BIAS: tl.constexpr, DIFF: tl.constexpr,
    TD_SPATIAL: tl.constexpr, HAS_CLS: tl.constexpr, TAPS: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Token row ``r`` × channel block ``pid_c`` of one part (TE or TD)."""
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    l = r % L
    t = (r // L) % T
    rows, ok = _taps(r, t, l, T, L, GH, GW, 1, IS_TE, HAS_CLS, TD_SPATIAL, TAPS)
    in_bias = _vector(in_bias_ptr, cols, cmask, HAS_IN_BIAS)
    x = _gather(z_ptr + COL, rows, ok, t, L, stride_z, cols, cmask, in_bias, DIFF)  # [TAPS, BLOCK_C]
    acc = tl.sum(_weight_tile(w_ptr, cols, cmask, IS_TE, TD_SPATIAL, TAPS) * x, axis=0)
    if HAS_BIAS:
        bias = _vector(bias_ptr, cols, cmask, True)
        if IS_TE:
            acc += bias
        else:
            acc += tl.where(l >= HAS_CLS, bias, 0.0)  # CLS rows of the TD part stay 0
    tl.store(h_ptr + COL + r * stride_h + cols, acc.to(h_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def _part_backward(
    pid_r, pid_c, dh_ptr, z_ptr, dz_ptr, part_ptr, in_bias_ptr, w_ptr,
    R, T, L, GH, GW, C, COL, stride_dh, stride_z, stride_dz,
    IS_TE: tl.constexpr, HAS_IN_BIAS: tl.constexpr, DIFF: tl.constexpr, TD_SPATIAL: tl.constexpr,
    HAS_CLS: tl.constexpr, TAPS: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """ROWS token rows × channel block ``pid_c`` of one part: ``dz`` for each row, and this program's
    partial sums of the kernel gradient ``[TAPS]``, the conv-bias gradient and the input-bias gradient,
    written to ``part[pid_r, 0:TAPS+2, cols]``."""
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    w = _weight_tile(w_ptr, cols, cmask, IS_TE, TD_SPATIAL, TAPS)
    in_bias = _vector(in_bias_ptr, cols, cmask, HAS_IN_BIAS)
    dz_ptr += COL
    dh_ptr += COL
    z_ptr += COL
    acc_w = tl.zeros((TAPS, BLOCK_C), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_C,), dtype=tl.float32)
    acc_in = tl.zeros((BLOCK_C,), dtype=tl.float32)
    no_bias = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for rr in range(ROWS):
        r = pid_r.to(tl.int64) * ROWS + rr
        live = r < R
        l = r % L
        t = (r // L) % T
        if IS_TE:
            is_row = live
        else:
            is_row = live & (l >= HAS_CLS)  # CLS rows have no TD part
        # Transposed conv: dX[r] = Σ_q w[q] · dh[r - q].
        rows_t, ok_t = _taps(r, t, l, T, L, GH, GW, -1, IS_TE, HAS_CLS, TD_SPATIAL, TAPS)
        dx = tl.sum(w * _gather(dh_ptr, rows_t, ok_t & is_row, t, L, stride_dh, cols, cmask, no_bias, False), 0)
        dz = dx
        if DIFF:  # z_t enters Δ at t (+) and at t + 1 (−)
            ok_n = ok_t & is_row & (t + 1 < T)
            dx_next = tl.sum(w * _gather(dh_ptr, rows_t + L, ok_n, t, L, stride_dh, cols, cmask, no_bias, False), 0)
            dz = tl.where(t > 0, dx, 0.0) - dx_next
        tl.store(dz_ptr + r * stride_dz + cols, dz.to(dz_ptr.dtype.element_ty), mask=cmask & live)
        # Kernel and bias gradients: dw[q] += dh[r] · X[r + q], db += dh[r], d(in_bias) += dX[r].
        dh_r = tl.load(dh_ptr + r * stride_dh + cols, mask=cmask & is_row, other=0.0).to(tl.float32)
        rows_f, ok_f = _taps(r, t, l, T, L, GH, GW, 1, IS_TE, HAS_CLS, TD_SPATIAL, TAPS)
        x = _gather(z_ptr, rows_f, ok_f & is_row, t, L, stride_z, cols, cmask, in_bias, DIFF)
        acc_w += dh_r[None, :] * x
        acc_b += dh_r
        acc_in += dx
    q = tl.arange(0, TAPS)
    part = part_ptr + pid_r.to(tl.int64) * (TAPS + 2) * C
    tl.store(part + q[:, None] * C + cols[None, :], acc_w, mask=cmask[None, :])
    tl.store(part + TAPS * C + cols, acc_b, mask=cmask)
    tl.store(part + (TAPS + 1) * C + cols, acc_in, mask=cmask)


@triton.jit
def _stencil_fwd_kernel(
    z_ptr, h_ptr, te_in_bias_ptr, te_w_ptr, te_bias_ptr, td_in_bias_ptr, td_w_ptr, td_bias_ptr,
    T, L, GH, GW, C_TE, C_TD, N_TE_BLOCKS, stride_z, stride_h,
    HAS_TE: tl.constexpr, HAS_TD: tl.constexpr, TE_IN_BIAS: tl.constexpr, TE_BIAS: tl.constexpr,
    TD_IN_BIAS: tl.constexpr, TD_BIAS: tl.constexpr, TD_DIFF: tl.constexpr, TD_SPATIAL: tl.constexpr,
    HAS_CLS: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Grid ``(R, TE channel blocks + TD channel blocks)``: both parts in one launch."""
    r = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1)
    if HAS_TE:
        if pid_c < N_TE_BLOCKS:
            _part_forward(r, pid_c, z_ptr, h_ptr, te_in_bias_ptr, te_w_ptr, te_bias_ptr, T, L, GH, GW, C_TE, 0,
                          stride_z, stride_h, True, TE_IN_BIAS, TE_BIAS, False, TD_SPATIAL, HAS_CLS, TE_TAPS, BLOCK_C)
    if HAS_TD:
        if pid_c >= N_TE_BLOCKS:
            _part_forward(r, pid_c - N_TE_BLOCKS, z_ptr, h_ptr, td_in_bias_ptr, td_w_ptr, td_bias_ptr, T, L, GH, GW,
                          C_TD, C_TE, stride_z, stride_h, False, TD_IN_BIAS, TD_BIAS, TD_DIFF, TD_SPATIAL, HAS_CLS,
                          TD_TAPS, BLOCK_C)


@triton.jit
def _stencil_bwd_kernel(
    dh_ptr, z_ptr, dz_ptr, te_part_ptr, td_part_ptr, te_in_bias_ptr, te_w_ptr, td_in_bias_ptr, td_w_ptr,
    R, T, L, GH, GW, C_TE, C_TD, N_TE_BLOCKS, stride_dh, stride_z, stride_dz,
    HAS_TE: tl.constexpr, HAS_TD: tl.constexpr, TE_IN_BIAS: tl.constexpr, TD_IN_BIAS: tl.constexpr,
    TD_DIFF: tl.constexpr, TD_SPATIAL: tl.constexpr, HAS_CLS: tl.constexpr, ROWS: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Grid ``(row blocks of ROWS, TE channel blocks + TD channel blocks)``: both parts in one launch."""
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    if HAS_TE:
        if pid_c < N_TE_BLOCKS:
            _part_backward(pid_r, pid_c, dh_ptr, z_ptr, dz_ptr, te_part_ptr, te_in_bias_ptr, te_w_ptr, R, T, L, GH,
                           GW, C_TE, 0, stride_dh, stride_z, stride_dz, True, TE_IN_BIAS, False, TD_SPATIAL, HAS_CLS,
                           TE_TAPS, ROWS, BLOCK_C)
    if HAS_TD:
        if pid_c >= N_TE_BLOCKS:
            _part_backward(pid_r, pid_c - N_TE_BLOCKS, dh_ptr, z_ptr, dz_ptr, td_part_ptr, td_in_bias_ptr, td_w_ptr,
                           R, T, L, GH, GW, C_TD, C_TE, stride_dh, stride_z, stride_dz, False, TD_IN_BIAS, TD_DIFF,
                           TD_SPATIAL, HAS_CLS, TD_TAPS, ROWS, BLOCK_C)


def _block_c(c: int) -> int:
    return min(128, max(16, triton.next_power_of_2(c)))


def _or(t: Optional[torch.Tensor], fallback: torch.Tensor) -> torch.Tensor:
    """Absent optional operands become a dummy pointer (their constexpr flag keeps them unread)."""
    return fallback if t is None else t


def stencil_forward(
    z: torch.Tensor, num_frames: int, tokens: int, grid: tuple[int, int], c_te: int,
    te: tuple[Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]],
    td: tuple[Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]],
    td_diff: bool, td_spatial: bool, has_cls: bool,
) -> torch.Tensor:
    """z ``[R, C_TE + C_TD]`` (unit column stride) -> h, same shape and dtype; one launch for both parts.

    te / td: ``(in_bias [C], weight [C, 3] / [C, 9], bias [C])``, each entry optional."""
    R, width = z.shape
    c_td = width - c_te
    h = torch.empty_like(z, memory_format=torch.contiguous_format)
    block = _block_c(max(c_te, c_td))
    n_te, n_td = cdiv(c_te, block), cdiv(c_td, block)
    _stencil_fwd_kernel[(R, n_te + n_td)](
        z, h, *(_or(t, z) for t in te), *(_or(t, z) for t in td),
        num_frames, tokens, grid[0], grid[1], c_te, c_td, n_te, z.stride(0), h.stride(0),
        HAS_TE=c_te > 0, HAS_TD=c_td > 0, TE_IN_BIAS=te[0] is not None, TE_BIAS=te[2] is not None,
        TD_IN_BIAS=td[0] is not None, TD_BIAS=td[2] is not None, TD_DIFF=td_diff, TD_SPATIAL=td_spatial,
        HAS_CLS=has_cls, BLOCK_C=block,
    )
    record_launch("stencil_fwd")
    return h


def stencil_backward(
    dh: torch.Tensor, z: torch.Tensor, num_frames: int, tokens: int, grid: tuple[int, int], c_te: int,
    te: tuple[Optional[torch.Tensor], Optional[torch.Tensor]],
    td: tuple[Optional[torch.Tensor], Optional[torch.Tensor]],
    td_diff: bool, td_spatial: bool, has_cls: bool,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """dh, z ``[R, C_TE + C_TD]`` -> (dz, te grads, td grads); te / td: ``(in_bias, weight)`` as in the
    forward. Each grads list is ``[d_weight [C, 3|9] fp32, d_bias [C] fp32, d_in_bias [C] fp32]`` (empty
    for a part that is absent). One launch for both parts."""
    R, width = z.shape
    c_td = width - c_te
    dz = torch.empty_like(z, memory_format=torch.contiguous_format)
    block = _block_c(max(c_te, c_td))
    n_te, n_td = cdiv(c_te, block), cdiv(c_td, block)
    n_rows = cdiv(R, _ROWS_PER_PROGRAM)
    parts = {is_te: torch.empty(n_rows, taps + 2, c, device=z.device, dtype=torch.float32)
             for is_te, c, taps in ((True, c_te, TE_TAPS.value), (False, c_td, TD_TAPS.value))}
    _stencil_bwd_kernel[(n_rows, n_te + n_td)](
        dh, z, dz, parts[True], parts[False], *(_or(t, z) for t in te), *(_or(t, z) for t in td),
        R, num_frames, tokens, grid[0], grid[1], c_te, c_td, n_te, dh.stride(0), z.stride(0), dz.stride(0),
        HAS_TE=c_te > 0, HAS_TD=c_td > 0, TE_IN_BIAS=te[0] is not None, TD_IN_BIAS=td[0] is not None,
        TD_DIFF=td_diff, TD_SPATIAL=td_spatial, HAS_CLS=has_cls, ROWS=_ROWS_PER_PROGRAM, BLOCK_C=block,
    )
    record_launch("stencil_bwd")
    grads: dict[bool, list[torch.Tensor]] = {}
    for is_te, c, taps, n_taps in ((True, c_te, TE_TAPS.value, 3), (False, c_td, TD_TAPS.value, 9)):
        sums = parts[is_te].sum(dim=0)  # fixed-order reduction over programs: deterministic
        grads[is_te] = [sums[:n_taps].t().contiguous(), sums[taps].clone(), sums[taps + 1].clone()] if c else []
    return dz, grads[True], grads[False]


# --- the stencil op (autograd-aware, torch.compile-able) -----------------------------------------

@torch.library.custom_op("m2clip_fast::stencil", mutates_args=())
def _stencil_op(
    z: torch.Tensor, num_frames: int, tokens: int, grid_h: int, grid_w: int, c_te: int,
    te_in_bias: Optional[torch.Tensor], te_weight: Optional[torch.Tensor], te_bias: Optional[torch.Tensor],
    td_in_bias: Optional[torch.Tensor], td_weight: Optional[torch.Tensor], td_bias: Optional[torch.Tensor],
    td_diff: bool, td_spatial: bool, has_cls: bool,
) -> torch.Tensor:
    return stencil_forward(z, num_frames, tokens, (grid_h, grid_w), c_te, (te_in_bias, te_weight, te_bias),
                           (td_in_bias, td_weight, td_bias), td_diff, td_spatial, has_cls)


@_stencil_op.register_fake
def _(z, num_frames, tokens, grid_h, grid_w, c_te, *args):
    return torch.empty_like(z, memory_format=torch.contiguous_format)


@torch.library.custom_op("m2clip_fast::stencil_backward", mutates_args=())
def _stencil_backward_op(
    dh: torch.Tensor, z: torch.Tensor, num_frames: int, tokens: int, grid_h: int, grid_w: int, c_te: int,
    te_in_bias: Optional[torch.Tensor], te_weight: Optional[torch.Tensor],
    td_in_bias: Optional[torch.Tensor], td_weight: Optional[torch.Tensor],
    td_diff: bool, td_spatial: bool, has_cls: bool,
) -> list[torch.Tensor]:
    dz, te, td = stencil_backward(dh, z, num_frames, tokens, (grid_h, grid_w), c_te, (te_in_bias, te_weight),
                                  (td_in_bias, td_weight), td_diff, td_spatial, has_cls)
    absent = lambda: [z.new_empty(0, dtype=torch.float32) for _ in range(3)]  # noqa: E731  (no aliasing)
    return [dz, *(te or absent()), *(td or absent())]


@_stencil_backward_op.register_fake
def _(dh, z, num_frames, tokens, grid_h, grid_w, c_te, te_in_bias, te_weight, td_in_bias, td_weight, *flags):
    c_td = z.shape[1] - c_te
    f32 = dict(device=z.device, dtype=torch.float32)

    def part(c, taps):
        if not c:
            return [torch.empty(0, **f32) for _ in range(3)]
        return [torch.empty(c, taps, **f32), torch.empty(c, **f32), torch.empty(c, **f32)]

    return [torch.empty_like(z, memory_format=torch.contiguous_format), *part(c_te, 3), *part(c_td, 9)]


def _stencil_setup(ctx, inputs, output):
    z, num_frames, tokens, grid_h, grid_w, c_te, te_in, te_w, te_b, td_in, td_w, td_b, diff, spatial, cls = inputs
    ctx.save_for_backward(z, te_in, te_w, td_in, td_w)
    ctx.geometry = (num_frames, tokens, grid_h, grid_w, c_te)
    ctx.flags = (diff, spatial, cls)
    ctx.has = [t is not None for t in (te_in, te_w, te_b, td_in, td_w, td_b)]
    ctx.dtypes = [None if t is None else t.dtype for t in (te_in, te_w, te_b, td_in, td_w, td_b)]


def _stencil_backward(ctx, dh):
    z, te_in, te_w, td_in, td_w = ctx.saved_tensors
    dz, te_dw, te_db, te_din, td_dw, td_db, td_din = _stencil_backward_op(
        dh.contiguous(), z, *ctx.geometry, te_in, te_w, td_in, td_w, *ctx.flags
    )
    # The op returns (weight, bias, in_bias) per part; inputs are ordered (in_bias, weight, bias).
    grads = [te_din, te_dw, te_db, td_din, td_dw, td_db]
    grads = [g.to(dt) if has else None for g, has, dt in zip(grads, ctx.has, ctx.dtypes)]
    return (dz, None, None, None, None, None, *grads, None, None, None)


_stencil_op.register_autograd(_stencil_backward, setup_context=_stencil_setup)


# --- public building blocks ------------------------------------------------------------------------

def _check_frames(op: str, x: torch.Tensor, num_frames: int) -> None:
    check_tensors(op, x)
    check(x.dim() == 3, f"{op}: x must be [B*T, L, C], got {list(x.shape)}")
    check(num_frames >= 1 and x.shape[0] % num_frames == 0,
          f"{op}: x.shape[0] = {x.shape[0]} must be a multiple of num_frames = {num_frames} (x is [B*T, L, C])")


def _check_kernel(op: str, weight: torch.Tensor, bias: Optional[torch.Tensor], shape: tuple, x: torch.Tensor) -> None:
    check_tensors(op, x, weight, bias)
    check(tuple(weight.shape) == shape, f"{op}: weight must be {list(shape)}, got {list(weight.shape)}")
    check(bias is None or tuple(bias.shape) == shape[:1], f"{op}: bias must be [{shape[0]}]")


def _launch(x: torch.Tensor, num_frames: int, grid: tuple[int, int], te: tuple, td: tuple,
            diff: bool, spatial: bool) -> torch.Tensor:
    """Run the stencil op on ``x [B*T, L, C]`` as a whole TE part (``te`` given) or TD part (``td``)."""
    dtype = compute_dtype(x)
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    c = x.shape[-1]
    z = as_rows(x.to(dtype), c)
    c_te = c if te[1] is not None else 0
    h = _stencil_op(z, num_frames, x.shape[1], grid[0], grid[1], c_te, *map(cast, te), *map(cast, td),
                    diff, spatial, False)
    return h.view(x.shape)


def temporal_conv(
    x: torch.Tensor, num_frames: int, weight: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Depthwise conv over frames, kernel 3, zero padding. x ``[B*T, L, C]``, weight ``[C, 1, 3]``,
    bias ``[C]`` -> ``[B*T, L, C]``."""
    _check_frames("temporal_conv", x, num_frames)
    _check_kernel("temporal_conv", weight, bias, (x.shape[-1], 1, 3), x)
    if not can_run_triton(x, "temporal_conv"):
        return reference.temporal_conv(x, num_frames, weight, bias)
    return _launch(x, num_frames, (0, 0), (None, weight.reshape(-1, 3), bias), (None, None, None), False, False)


def temporal_difference(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``d_t = x_t - x_{t-1}``, ``d_0 = 0``. x ``[B*T, N, C]`` -> ``[B*T, N, C]``."""
    _check_frames("temporal_difference", x, num_frames)
    if not can_run_triton(x, "temporal_difference"):
        return reference.temporal_difference(x, num_frames)
    n = x.shape[1]
    return _launch(x, num_frames, (1, n), (None, None, None), (None, None, None), True, False)


def spatial_conv(
    x: torch.Tensor, grid: tuple[int, int], weight: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Depthwise 3×3 conv over each frame's ``h×w`` token grid, zero padding. x ``[B*T, h*w, C]``,
    weight ``[C, 1, 3, 3]``, bias ``[C]`` -> ``[B*T, h*w, C]``."""
    _check_frames("spatial_conv", x, 1)
    check(len(grid) == 2 and grid[0] * grid[1] == x.shape[1],
          f"spatial_conv: grid {tuple(grid)} does not tile the {x.shape[1]} tokens of x [B*T, h*w, C]")
    _check_kernel("spatial_conv", weight, bias, (x.shape[-1], 1, 3, 3), x)
    if not can_run_triton(x, "spatial_conv"):
        return reference.spatial_conv(x, grid, weight, bias)
    return _launch(x, 1, tuple(grid), (None, None, None), (None, weight.reshape(-1, 9), bias), False, True)
