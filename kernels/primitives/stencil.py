"""The TED-Adapter's stencil: temporal depthwise conv (TE part) and temporal difference + 3×3 spatial
depthwise conv (TD part), forward and backward, both parts in one launch.

Rows are tokens in frame-major order, ``r = (b*T + t)*L + l``; a row of ``z`` holds ``C_TE + C_TD``
channels:
- **TE part**, columns ``[0, C_TE)``: ``h = conv_T(z + in_bias) + bias`` — 3 taps over frames, i.e.
  rows ``r - L``, ``r``, ``r + L`` (zero padding applies to ``z + in_bias``);
- **TD part**, columns ``[C_TE, C_TE + C_TD)``: ``g = Δ_t z + in_bias`` (``Δ_t z_0 = 0``),
  ``h = conv_3x3(g) + bias`` over each frame's ``GH×GW`` patch grid, i.e. rows ``r + di*GW + dj``. Token
  ``l = 0`` is CLS: its TD output is 0, and patch ``(i, j)`` is ``l = 1 + i*GW + j``.

Each program owns ``BLOCK_N`` clip-token positions ``n = b*L + l`` (consecutive, possibly across two clips)
and a channel block, and **walks the clip's frames** ``t = 0 … T-1`` (row ``r = (b*T + t)*L + l``), so every
element of ``z`` (and of ``dh``) is read from memory once:
- the temporal taps are carried across iterations in registers (frames t-1, t, t+1), never reloaded;
- the 3×3 taps are shifted loads within the same frame (±1, ±GW, ±GW±1 rows): lines the program (or its
  neighbour) just loaded, served by L1/L2, not HBM;
- the TD forward uses that conv_3x3 is linear: ``h_t = S_t - S_{t-1} + conv_3x3(in_bias) + bias`` with
  ``S_t = conv_3x3(z_t)`` (``h_0`` drops ``S``), so a frame's ``S`` is computed once and carried.
Depthwise weights and biases are loaded once per program. The backward applies the transposed stencil the
same way and accumulates the depthwise weight/bias gradients and the in-bias gradient over all its rows
(every frame) into one per-program partial row (``[C*TAPS weight | C bias | C in-bias]``), summed later in a
fixed order (:mod:`kernels.primitives.reduce`): deterministic, no atomics.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl

from ..runtime import cdiv, launch, next_power_of_2

TE_TAPS, TD_TAPS = 3, 9
_TE_TAPS, _TD_TAPS = tl.constexpr(TE_TAPS), tl.constexpr(TD_TAPS)  # the same, inside kernels
# Tiles [positions, channels], chosen with the static model (benchmarks/static/) at ViT-B/16 compiled for sm_90 with
# our Triton (3.8) and the GPU image's (3.6), with the parameters fp32 (training: the adapters' master weights) and
# bf16 (the op benchmark); both Tritons compile them alike (3.6: the backward 114 registers, no spills):
# - forward: [16, 32] tiles, 4 warps (4 elements a thread), 96 registers: five programs (20 warps) an SM, and every
#   frame's loads issue before their first use, one dependent memory round a frame (predicted 19.7 µs; the [16, 64]
#   tiles at 8 warps and 80 registers before: 23.4, two rounds a frame). The TD part keeps its nine depthwise taps in
#   registers for the whole frame walk (loaded and unpacked once, not every frame).
# - backward: [16, 32] tiles, 8 warps (2 elements a thread): eleven fp32 accumulators, dX_{t+1}, the nine depthwise
#   taps (loaded once, before the walk, like the forward's) and a frame's eleven tiles fit 107 registers with no
#   spills, so every frame's loads go out together — one round a frame, where the [16, 64] tiles at 128 registers
#   made four (bf16 parameters) or seven (fp32: the taps, reloaded each frame, interleaved with their uses). Two
#   programs an SM; predicted 43.1 µs with fp32 or bf16 parameters, against 99.3 and 61.8 for [16, 64] (the H200
#   measured that one at 84.9, bf16). 4 warps at 128 registers spill; at 168 (154 used) they predict 37.3 µs, and
#   8 warps at 80 (three programs an SM, spilling 24 bytes the model does not charge) 29.1 — both measured beside
#   it (benchmarks/test_stencils.py), the first over the 128-register budget (docs/DESIGN.md §2.3).
BLOCK_N, MAX_BLOCK_C, FWD_WARPS, FWD_MAX_REGISTERS = 16, 32, 4, 128
BWD_BLOCK_N, BWD_BLOCK_C, BWD_WARPS = 16, 32, 8
BWD_MAX_REGISTERS = 128


def partial_width(channels: int, taps: int) -> int:
    """Floats per program in a part's partial row: weight ``[C, taps]``, bias ``[C]``, in-bias ``[C]``."""
    return channels * (taps + 2)


@triton.jit
def _tile(base, rows, stride, cols, ok, cmask, EVEN_C: tl.constexpr):
    """``[BLOCK_N, BLOCK_C]`` fp32 tile of ``base[rows, cols]``, zero where ``ok`` (per row) is false.
    ``rows`` are relative to the program's first row (int32; ``base`` carries the 64-bit offset)."""
    mask = ok[:, None] if EVEN_C else ok[:, None] & cmask[None, :]
    return tl.load(base + (rows * stride)[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _put(base, rows, stride, cols, value, ok, cmask, EVEN_C: tl.constexpr):
    """Store ``value`` ``[BLOCK_N, BLOCK_C]`` to ``base[rows, cols]`` where ``ok``."""
    mask = ok[:, None] if EVEN_C else ok[:, None] & cmask[None, :]
    tl.store(base + (rows * stride)[:, None] + cols[None, :], value.to(base.dtype.element_ty), mask=mask)


@triton.jit
def _vec(ptr, cols, cmask):
    """``[BLOCK_C]`` fp32 vector of ``ptr[cols]`` (0 past the end); ``ptr`` None gives zeros."""
    if ptr is None:
        v = tl.zeros(cols.shape, dtype=tl.float32)
    else:
        v = tl.load(ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    return v


@triton.jit
def _taps(ptr, wq, offsets, cmask, TAPS: tl.constexpr):
    """A depthwise weight's ``TAPS`` taps as a tuple of ``[1, BLOCK_C]`` fp32 rows (tap q at ``ptr + q*wq + offsets``),
    loaded once, before a program's frame loop."""
    w = ()
    for q in tl.static_range(TAPS):
        w = w + (_vec(ptr + q * wq, offsets, cmask)[None, :],)
    return w


@triton.jit
def _rowf(ok):
    """A per-row condition as a ``[BLOCK_N, 1]`` 0/1 float column (multiplies instead of selects)."""
    return ok.to(tl.float32)[:, None]


@triton.jit
def _small_divmod(a, b):
    """``(a // b, a % b)`` for small non-negative int32 ``a`` (< 2**16, so exact) with one fp32 multiply
    instead of an integer division."""
    q = ((a.to(tl.float32) + 0.5) * (1.0 / b)).to(tl.int32)
    return q, a - q * b


@triton.jit
def _positions(first, N, T, L, BLOCK_N: tl.constexpr):
    """The program's positions ``n = first + [0, BLOCK_N)`` (``n = b*L + l``): their frame-0 rows relative to
    the program's first row (:func:`_first_row`; frame t is ``+ t*L``), token ``l`` and liveness
    (``n < N``), all ``[BLOCK_N]``. One exact division per program, cheap ones per position."""
    n = tl.arange(0, BLOCK_N)
    clip, l = _small_divmod(first % L + n, L)  # clip relative to the first position's
    return n + clip * (T - 1) * L, l, first + n < N


@triton.jit
def _first_row(first, T, L):
    """Row of position ``first`` in frame 0, as int64 (the base pointer's offset)."""
    return (first // L).to(tl.int64) * T * L + first % L


@triton.jit
def _patch(l, live, GW):
    """For tokens ``l`` (CLS first): whether each is a live patch row, and its grid row ``i`` and column ``j``."""
    p = l - 1  # patch index; -1 on the CLS row
    i, j = _small_divmod(tl.maximum(p, 0), GW)
    return live & (p >= 0), i, j


@triton.jit
def _in_grid(is_patch, i, j, DI: tl.constexpr, DJ: tl.constexpr, GH, GW):
    """Whether patch ``(i + DI, j + DJ)`` lies inside the grid (per row)."""
    return is_patch & (i + DI >= 0) & (i + DI < GH) & (j + DJ >= 0) & (j + DJ < GW)


@triton.jit
def _stencil_fwd_kernel(
    z_ptr, h_ptr, te_in_bias_ptr, te_w_ptr, te_bias_ptr, td_in_bias_ptr, td_w_ptr, td_bias_ptr,
    N, T, L, GH, GW, C_TE, C_TD, N_TE_BLOCKS, stride_z, stride_h, te_wc, te_wq, td_wc, td_wq,
    HAS_TE: tl.constexpr, HAS_TD: tl.constexpr, EVEN_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
    AUX: tl.constexpr, AUX_ONES: tl.constexpr, AUX_GATE: tl.constexpr,
):
    """Grid ``(cdiv(N, BLOCK_N), TE channel blocks + TD channel blocks)`` with ``N = B*L``; h
    ``[R, C_TE + C_TD + AUX]``: the programs of channel block 0 also write the ``AUX`` columns past the channels,
    1 in column ``AUX_ONES``, the patch gate ``[l ≠ 0]`` in column ``AUX_GATE`` (-1: none), 0 elsewhere.

    A masked load is the zero padding; the in-bias enters as ``(w[q] · in_bias) · valid_q`` with ``valid_q``
    a per-row 0/1 (no per-element select).
    """
    pid_c = tl.program_id(1)
    first = tl.program_id(0) * BLOCK_N
    row0 = _first_row(first, T, L)
    z = z_ptr + row0 * stride_z  # 64-bit base; per-element offsets stay 32-bit
    h = h_ptr + row0 * stride_h
    rows, l, live = _positions(first, N, T, L, BLOCK_N)  # [BLOCK_N] each; frame t at rows + t*L
    if AUX > 0:
        if pid_c == 0:  # the augmented K's columns, the same tile every frame, in the channel tiles' layout
            a = tl.arange(0, BLOCK_C)
            aux = (a == AUX_ONES).to(tl.float32)[None, :] + (a == AUX_GATE).to(tl.float32)[None, :] * _rowf(l != 0)
            for t in range(T):
                _put(h + C_TE + C_TD, rows + t * L, stride_h, a, aux, live, a < AUX, False)
    if HAS_TE:
        if pid_c < N_TE_BLOCKS:
            cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C]
            cmask = cols < C_TE
            in_bias = _vec(te_in_bias_ptr, cols, cmask)[None, :]
            bias = _vec(te_bias_ptr, cols, cmask)[None, :]
            w0 = _vec(te_w_ptr, cols * te_wc, cmask)[None, :]
            w1 = _vec(te_w_ptr + te_wq, cols * te_wc, cmask)[None, :]
            w2 = _vec(te_w_ptr + 2 * te_wq, cols * te_wc, cmask)[None, :]
            x_prev = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)  # z + in_bias of frames t-1, t, t+1
            x_cur = _tile(z, rows, stride_z, cols, live, cmask, EVEN_C) + in_bias * _rowf(live)
            for t in range(T):
                ahead = live & (t + 1 < T)
                x_next = _tile(z, rows + (t + 1) * L, stride_z, cols, ahead, cmask, EVEN_C) + in_bias * _rowf(ahead)
                _put(h, rows + t * L, stride_h, cols, bias + w0 * x_prev + w1 * x_cur + w2 * x_next, live, cmask,
                     EVEN_C)
                x_prev, x_cur = x_cur, x_next
    if HAS_TD:
        if pid_c >= N_TE_BLOCKS:
            cols = (pid_c - N_TE_BLOCKS) * BLOCK_C + tl.arange(0, BLOCK_C)
            cmask = cols < C_TD
            is_patch, i, j = _patch(l, live, GW)
            in_bias = _vec(td_in_bias_ptr, cols, cmask)
            # conv_3x3 of the in-bias (zero padded) + bias: the same every frame; CLS rows of the TD part stay 0
            w = _taps(td_w_ptr, td_wq, cols * td_wc, cmask, _TD_TAPS)
            const = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32) + _vec(td_bias_ptr, cols, cmask)[None, :] * _rowf(is_patch)
            for q in tl.static_range(_TD_TAPS):  # patch (i + q // 3 - 1, j + q % 3 - 1)
                ok = _in_grid(is_patch, i, j, q // 3 - 1, q % 3 - 1, GH, GW)
                const += w[q] * in_bias[None, :] * _rowf(ok)
            s_prev = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)  # S_{t-1} = conv_3x3(z_{t-1})
            for t in range(T):
                s = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)
                for q in tl.static_range(_TD_TAPS):
                    ok = _in_grid(is_patch, i, j, q // 3 - 1, q % 3 - 1, GH, GW)
                    tap = _tile(z + C_TE, rows + t * L + (q // 3 - 1) * GW + (q % 3 - 1), stride_z, cols, ok, cmask,
                                EVEN_C)
                    s += w[q] * tap
                moving = tl.where(t > 0, 1.0, 0.0)  # Δ_t z_0 = 0
                _put(h + C_TE, rows + t * L, stride_h, cols, const + (s - s_prev) * moving, live, cmask, EVEN_C)
                s_prev = s


@triton.jit
def _add_to_tap(q: tl.constexpr, value, a0, a1, a2, a3, a4, a5, a6, a7, a8):
    """``a_q += value`` for a compile-time tap index ``q`` (nine named accumulators)."""
    if q == 0:
        a0 += value
    elif q == 1:
        a1 += value
    elif q == 2:
        a2 += value
    elif q == 3:
        a3 += value
    elif q == 4:
        a4 += value
    elif q == 5:
        a5 += value
    elif q == 6:
        a6 += value
    elif q == 7:
        a7 += value
    else:
        a8 += value
    return a0, a1, a2, a3, a4, a5, a6, a7, a8


@triton.jit
def _store_tap(part, cols, cmask, wc, wq, q: tl.constexpr, acc):
    """Tap ``q``'s kernel gradient, reduced over rows, laid out like the weight (``c*wc + q*wq``)."""
    tl.store(part + cols * wc + q * wq, tl.sum(acc, axis=0), mask=cmask)


@triton.jit
def _store_partials(part, C, cols, cmask, wc, wq, sum_dh, sum_dx, TAPS: tl.constexpr,
                    a0, a1, a2, a3, a4, a5, a6, a7, a8):
    """Reduce the per-tap and bias accumulators over rows into ``part = [weight | bias | in-bias]``."""
    _store_tap(part, cols, cmask, wc, wq, 0, a0)
    _store_tap(part, cols, cmask, wc, wq, 1, a1)
    _store_tap(part, cols, cmask, wc, wq, 2, a2)
    if TAPS == 9:
        _store_tap(part, cols, cmask, wc, wq, 3, a3)
        _store_tap(part, cols, cmask, wc, wq, 4, a4)
        _store_tap(part, cols, cmask, wc, wq, 5, a5)
        _store_tap(part, cols, cmask, wc, wq, 6, a6)
        _store_tap(part, cols, cmask, wc, wq, 7, a7)
        _store_tap(part, cols, cmask, wc, wq, 8, a8)
    tl.store(part + C * TAPS + cols, tl.sum(sum_dh, axis=0), mask=cmask)
    tl.store(part + C * (TAPS + 1) + cols, tl.sum(sum_dx, axis=0), mask=cmask)


@triton.jit
def _stencil_bwd_kernel(
    dh_ptr, z_ptr, dz_ptr, te_part_ptr, td_part_ptr, te_in_bias_ptr, te_w_ptr, td_in_bias_ptr, td_w_ptr,
    N, T, L, GH, GW, C_TE, C_TD, N_TE_BLOCKS, stride_dh, stride_z, stride_dz, te_wc, te_wq, td_wc, td_wq,
    HAS_TE: tl.constexpr, HAS_TD: tl.constexpr, EVEN_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Grid ``(cdiv(N, BLOCK_N), TE channel blocks + TD channel blocks)``; dz ``[R, C_TE + C_TD]``.

    With X the stencil's input (``z + in_bias``, or ``Δ_t z + in_bias``) and ``shift_q`` tap q's row offset:
        dX[r] = Σ_q w[q] · dh[r - shift_q]                 (the transposed stencil; dz = dX, or its Δ_tᵀ)
        dw[q] = Σ_r dh[r] · X[r + shift_q] = Σ_r X[r] · dh[r - shift_q]
    so each shifted ``dh`` tile feeds both. TE: the ``dh`` of frames t-1, t, t+1 are carried across frames. TD
    walks the frames backwards: ``dz_t = [t > 0]·dX_t - dX_{t+1}`` carries ``dX_{t+1}``; ``X_t`` needs ``z_t``
    and ``z_{t-1}``. The sums stay ``[BLOCK_N, BLOCK_C]`` accumulators over every frame, reduced
    across threads once, at the end, into this program's partial row ``[weight (c*taps + q) | bias | in-bias]``.
    """
    pid_c = tl.program_id(1)
    first = tl.program_id(0) * BLOCK_N
    row0 = _first_row(first, T, L)
    dh = dh_ptr + row0 * stride_dh  # 64-bit bases; per-element offsets stay 32-bit
    z = z_ptr + row0 * stride_z
    dz = dz_ptr + row0 * stride_dz
    rows, l, live = _positions(first, N, T, L, BLOCK_N)
    zero = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = zero, zero, zero, zero, zero, zero, zero, zero, zero
    sum_dh, sum_dx = zero, zero
    if HAS_TE:
        if pid_c < N_TE_BLOCKS:
            cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
            cmask = cols < C_TE
            in_bias = _vec(te_in_bias_ptr, cols, cmask)[None, :]
            w0 = _vec(te_w_ptr, cols * te_wc, cmask)[None, :]
            w1 = _vec(te_w_ptr + te_wq, cols * te_wc, cmask)[None, :]
            w2 = _vec(te_w_ptr + 2 * te_wq, cols * te_wc, cmask)[None, :]
            g_prev = zero  # dh of frames t-1, t, t+1
            g_cur = _tile(dh, rows, stride_dh, cols, live, cmask, EVEN_C)
            for t in range(T):
                g_next = _tile(dh, rows + (t + 1) * L, stride_dh, cols, live & (t + 1 < T), cmask, EVEN_C)
                x = _tile(z, rows + t * L, stride_z, cols, live, cmask, EVEN_C) + in_bias * _rowf(live)
                d_x = w0 * g_next + w1 * g_cur + w2 * g_prev  # tap q reads frame t + q - 1
                _put(dz, rows + t * L, stride_dz, cols, d_x, live, cmask, EVEN_C)
                a0 += x * g_next
                a1 += x * g_cur
                a2 += x * g_prev
                sum_dh += g_cur
                sum_dx += d_x
                g_prev, g_cur = g_cur, g_next
            part = te_part_ptr + tl.program_id(0).to(tl.int64) * C_TE * (_TE_TAPS + 2)
            _store_partials(part, C_TE, cols, cmask, te_wc, te_wq, sum_dh, sum_dx, _TE_TAPS, a0, a1, a2, a3, a4, a5, a6, a7, a8)
    if HAS_TD:
        if pid_c >= N_TE_BLOCKS:
            cols = (pid_c - N_TE_BLOCKS) * BLOCK_C + tl.arange(0, BLOCK_C)
            cmask = cols < C_TD
            is_patch, i, j = _patch(l, live, GW)
            in_bias = _vec(td_in_bias_ptr, cols, cmask)[None, :] * _rowf(is_patch)
            d_next = zero  # dX_{t+1}
            w = _taps(td_w_ptr, td_wq, cols * td_wc, cmask, _TD_TAPS)
            for back in range(T):
                t = T - 1 - back
                moving = tl.where(t > 0, 1.0, 0.0)
                # X_t = Δ_t z + in_bias on patch rows, 0 on CLS rows. z_t was this program's z_{t-1} one frame
                # ago: loaded again (from cache) rather than carried, which keeps the tile within 128 registers.
                z_prev = _tile(z + C_TE, rows + (t - 1) * L, stride_z, cols, is_patch & (t > 0), cmask, EVEN_C)
                x = (_tile(z + C_TE, rows + t * L, stride_z, cols, is_patch, cmask, EVEN_C) - z_prev) * moving + in_bias
                d_x = zero
                for q in tl.static_range(_TD_TAPS):
                    ok = _in_grid(is_patch, i, j, 1 - q // 3, 1 - q % 3, GH, GW)
                    shift = rows + t * L - (q // 3 - 1) * GW - (q % 3 - 1)
                    g = _tile(dh + C_TE, shift, stride_dh, cols, ok, cmask, EVEN_C)
                    d_x += w[q] * g
                    a0, a1, a2, a3, a4, a5, a6, a7, a8 = _add_to_tap(q, x * g, a0, a1, a2, a3, a4, a5, a6, a7, a8)
                    if q == 4:
                        sum_dh += g
                # z_t enters Δ at frame t (+) and at frame t + 1 (−)
                _put(dz + C_TE, rows + t * L, stride_dz, cols, d_x * moving - d_next, live, cmask, EVEN_C)
                sum_dx += d_x
                d_next = d_x
            part = td_part_ptr + tl.program_id(0).to(tl.int64) * C_TD * (_TD_TAPS + 2)
            _store_partials(part, C_TD, cols, cmask, td_wc, td_wq, sum_dh, sum_dx, _TD_TAPS, a0, a1, a2, a3, a4, a5, a6, a7, a8)


def tap_strides(weight: Optional[torch.Tensor]) -> tuple[int, int]:
    """(channel stride, tap stride) of a depthwise weight ``[C, 1, 3]`` / ``[C, 1, 3, 3]``: ``(taps, 1)``
    when contiguous, ``(1, C)`` when stored tap-major (as :func:`kernels.packing.tap_major` lays it out, so
    that a program's channels are contiguous for every tap)."""
    if weight is None:
        return 0, 0
    return weight.stride(0), weight.stride(-1)


def _block_c(c_te: int, c_td: int, cap: int) -> int:
    return min(cap, max(16, next_power_of_2(max(c_te, c_td))))


class StencilPart(NamedTuple):
    """One part's parameters, of any float dtype (read in fp32); all None for an absent part.

    in_bias ``[C]`` (the first GEMM's bias, added before the stencil), weight ``[C, 1, 3]`` (TE) /
    ``[C, 1, 3, 3]`` (TD), contiguous or tap-major, bias ``[C]``."""

    in_bias: Optional[torch.Tensor]
    weight: Optional[torch.Tensor]
    bias: Optional[torch.Tensor] = None


# The launches below pass every argument positionally, in the kernel's order: kernels.launcher replays a launch
# from its positional arguments (keywords are the constexprs).
def stencil_forward(z: torch.Tensor, num_frames: int, tokens: int, grid: tuple[int, int], c_te: int,
                    te: StencilPart, td: StencilPart, aux_columns: int = 0) -> torch.Tensor:
    """z ``[R, C_TE + C_TD]`` (unit column stride; each frame ``tokens`` rows, CLS first) -> h
    ``[R, C_TE + C_TD + aux_columns]`` in z's dtype; one launch for both parts. The ``aux_columns`` (at least one a
    part) are the output GEMM's augmented K (:data:`kernels.packing.AUX_COLUMNS`): 1 for the TE part's bias, then
    the patch gate ``[l ≠ 0]`` for the TD part's, then zeros."""
    R, width = z.shape
    c_td = width - c_te
    h = torch.empty((R, width + aux_columns), device=z.device, dtype=z.dtype)
    ones, gate = (0 if c_te else -1), ((1 if c_te else 0) if c_td else -1)
    if aux_columns and not (c_te > 0) + (c_td > 0) <= aux_columns <= 16:
        raise ValueError(f"stencil_forward: aux_columns must be 0, or 1 to 16 with a column for each part's bias, "
                         f"got {aux_columns}")
    block = _block_c(c_te, c_td, MAX_BLOCK_C)
    n_te, n_td = cdiv(c_te, block), cdiv(c_td, block)
    positions = R // num_frames
    launch(_stencil_fwd_kernel, (cdiv(positions, BLOCK_N), n_te + n_td),
           z, h, *te, *td, positions, num_frames, tokens, grid[0], grid[1], c_te, c_td, n_te, z.stride(0), h.stride(0),
           *tap_strides(te.weight), *tap_strides(td.weight), HAS_TE=c_te > 0, HAS_TD=c_td > 0,
           EVEN_C=c_te % block == 0 and c_td % block == 0, BLOCK_N=BLOCK_N, BLOCK_C=block,
           AUX=aux_columns, AUX_ONES=ones, AUX_GATE=gate, name="stencil_fwd", num_warps=FWD_WARPS,
           maxnreg=FWD_MAX_REGISTERS)
    return h


def stencil_backward(dh: torch.Tensor, z: torch.Tensor, num_frames: int, tokens: int, grid: tuple[int, int],
                     c_te: int, te: StencilPart, td: StencilPart, te_part: Optional[torch.Tensor],
                     td_part: Optional[torch.Tensor]) -> torch.Tensor:
    """dh, z ``[R, C_TE + C_TD]`` -> dz, same shape; te / td as in the forward (their biases unused).

    Writes each part's per-program partial gradient sums into ``te_part [P, C_TE*5]`` / ``td_part
    [P, C_TD*11]`` (fp32, ``P = stencil_programs(R // num_frames)``), to be summed over ``P``. One launch for
    both parts."""
    R, width = z.shape
    c_td = width - c_te
    dz = torch.empty((R, width), device=z.device, dtype=z.dtype)
    block = _block_c(c_te, c_td, BWD_BLOCK_C)
    n_te, n_td = cdiv(c_te, block), cdiv(c_td, block)
    positions = R // num_frames
    launch(_stencil_bwd_kernel, (stencil_programs(positions), n_te + n_td),
           dh, z, dz, te_part, td_part, te.in_bias, te.weight, td.in_bias, td.weight, positions, num_frames, tokens,
           grid[0], grid[1], c_te, c_td, n_te, dh.stride(0), z.stride(0), dz.stride(0), *tap_strides(te.weight),
           *tap_strides(td.weight), HAS_TE=c_te > 0, HAS_TD=c_td > 0, EVEN_C=c_te % block == 0 and c_td % block == 0,
           BLOCK_N=BWD_BLOCK_N, BLOCK_C=block, name="stencil_bwd", num_warps=BWD_WARPS, maxnreg=BWD_MAX_REGISTERS)
    return dz


def stencil_programs(positions: int) -> int:
    """Programs along the ``B*L`` clip-token positions of the backward launch, i.e. the partial rows each
    part's gradients are cut into."""
    return cdiv(positions, BWD_BLOCK_N)
