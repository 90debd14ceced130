"""GEMM with fused epilogues, and the ``linear`` op built on it.

``C[M, N] = epilogue(A[M, K] @ B[K, N])`` with, in order: ``+ bias[n]``; then GELU (optionally storing the
pre-activation) or multiplication by ``GELU'(aux[m, n])``; then ``+ residual``. The epilogue can also write the
column sums of the output or of the residual over the tile's rows — bias gradients, summed later by
:mod:`kernels.primitives.reduce`.

Operands are read through arbitrary strides, so transposed operands cost nothing.

Split-K (plain GEMMs with an fp32 output, i.e. the weight gradients ``gᵀ·x``: small ``M×N``, long ``K``,
too few output tiles to fill the GPU): the K range is cut into ``S`` slices and slice ``s`` writes its
fp32 partial tile to ``C[s]``, summed later in a fixed order: deterministic, no atomics.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from .. import runtime
from ..dtypes import dot_dtype, fp32_dot_precision
from ..runtime import INTERPRET, cdiv, launch, next_power_of_2
from .reduce import Partials

# Epilogue and column-sum choices, as the kernel's constexpr flags see them.
NONE, GELU, GELU_GRAD = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)
OF_OUTPUT, OF_RESIDUAL = tl.constexpr(1), tl.constexpr(2)
EPILOGUES = {"none": NONE.value, "gelu": GELU.value, "gelu_grad": GELU_GRAD.value}
COLSUM_OF = {None: NONE.value, "output": OF_OUTPUT.value, "residual": OF_RESIDUAL.value}
# Column sums are written per BLOCK_M rows: the host sizes their buffer before autotuning picks a tile.
COLSUM_BLOCK_M = 32 if INTERPRET else 64
_INTERPRETED = tl.constexpr(INTERPRET)
_SQRT1_2 = tl.constexpr(0.7071067811865476)
_INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


def _configs() -> list[triton.Config]:
    if INTERPRET:  # the interpreter crashes on several configs; one small tile keeps it fast
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4})]
    # No 128×256 tile: its accumulator alone is 128 registers a thread. Tiles with 64 accumulator registers
    # a thread serve plain GEMMs; fused epilogues, which hold a second tile (residual, GELU input) and
    # reduce columns, get 32 (see _fitting_configs) so that no variant passes 128 registers.
    def config(m, n, warps, stages):
        return triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=stages,
                             num_warps=warps)

    return [config(128, 128, 8, 3), config(128, 64, 4, 4), config(64, 128, 4, 4),
            config(128, 64, 8, 4), config(64, 128, 8, 4), config(64, 64, 4, 4),
            triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 16, "GROUP_M": 8}, num_stages=2, num_warps=4)]


def _accumulator_registers(config: triton.Config) -> int:
    return config.kwargs["BLOCK_M"] * config.kwargs["BLOCK_N"] // (32 * config.num_warps)


def _fitting_configs(configs: list[triton.Config], named_args: dict, **constexprs) -> list[triton.Config]:
    """Keep the tiles that suit this launch: none far larger than the problem (a 128×128 tile on 40 rows
    only costs compile time); small accumulators where the epilogue holds a second tile; for column sums,
    the row tile the host sized their buffer for. The smallest tile always stays."""
    args = {**named_args, **constexprs}
    # IEEE fp32 multiplies run on the FMA units with both operand tiles in registers: a short K step only.
    ieee = args.get("INPUT_PRECISION") == "ieee" and str(args.get("DOT_DTYPE")) == "fp32"
    configs = [c for c in configs if (c.kwargs["BLOCK_K"] == 16) == ieee] or configs
    if args.get("COLSUM"):
        configs = [c for c in configs if c.kwargs["BLOCK_M"] == COLSUM_BLOCK_M]
    if args.get("COLSUM") or args.get("EPILOGUE") or args.get("res_ptr") is not None:
        configs = [c for c in configs if _accumulator_registers(c) <= 32 or INTERPRET]
    m, n = (max(64, next_power_of_2(args[d])) for d in ("M", "N"))
    fitting = [c for c in configs if c.kwargs["BLOCK_M"] <= m and c.kwargs["BLOCK_N"] <= n]
    return fitting or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]


@triton.jit
def _gelu(x):
    return 0.5 * x * (1.0 + tl.math.erf(x * _SQRT1_2))


@triton.jit
def _gelu_grad(x):
    return 0.5 * (1.0 + tl.math.erf(x * _SQRT1_2)) + x * tl.exp(-0.5 * x * x) * _INV_SQRT_2PI


@triton.jit
def _dot_operand(x, DOT_DTYPE: tl.constexpr, ROUND_TF32: tl.constexpr):
    """A tile as ``tl.dot``'s operand. With ``ROUND_TF32`` (fp32 under TF32) each value is rounded to the
    nearest TF32 value, ties away from zero, as ``cvt.rna.tf32.f32`` and cuBLAS do. The tensor cores would
    otherwise truncate the low 13 bits, shrinking every product by ~2^-11 on average: through the
    TED-Adapter at ViT-B/16 width that is 1.5e-3 relative error, against 4e-4 rounded (DESIGN's bound:
    1e-3). The interpreter then multiplies exactly the values a GPU does."""
    x = x.to(DOT_DTYPE)
    if ROUND_TF32:
        if _INTERPRETED:  # the same rounding in integer arithmetic (no PTX here); NaN stays NaN
            rounded = ((x.to(tl.uint32, bitcast=True) + 0x1000) & 0xFFFFE000).to(tl.float32, bitcast=True)
            x = tl.where(x == x, rounded, x)
        else:
            x = tl.inline_asm_elementwise("cvt.rna.tf32.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                          is_pure=True, pack=1)
    return x


@triton.autotune(configs=_configs(), key=["M_BUCKET", "N", "K", "K_SPLIT", "VARIANT"],
                 prune_configs_by={"early_config_prune": _fitting_configs})
@triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})
@triton.jit
def _gemm_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr, aux_ptr, res_ptr, pre_ptr, colsum_ptr,
    M, N, K, M_BUCKET, K_SPLIT,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cs, stride_cm, stride_auxm, stride_resm,
    VARIANT: tl.constexpr,  # the epilogue, as a string: part of the autotune key
    EPILOGUE: tl.constexpr, COLSUM: tl.constexpr,
    DOT_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr, ROUND_TF32: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """Grid ``(output tiles, K slices)``. Absent operands (bias, aux, residual, pre, colsum) are None."""
    # Grouped tile order: GROUP_M row tiles share B tiles in L2. Axis 1: the K slice (split-K).
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_m, num_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_n
    first_m = (pid // group) * GROUP_M
    group_rows = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % group_rows
    pid_n = (pid % group) // group_rows

    # Scalar 64-bit bases (tile origin, K position) and 32-bit offsets inside the tile keep per-element
    # address arithmetic, and registers, small. Row/column masks are loop-invariant (and keep loads
    # vectorised); with EVEN_K the main loop has no K mask.
    m0, n0 = pid_m * BLOCK_M, pid_n * BLOCK_N
    rm = tl.arange(0, BLOCK_M)  # [BLOCK_M], tile-relative
    rn = tl.arange(0, BLOCK_N)  # [BLOCK_N]
    rk = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    m_mask, n_mask = m0 + rm < M, n0 + rn < N
    a_offs = (rm * stride_am)[:, None] + (rk * stride_ak)[None, :]  # [BLOCK_M, BLOCK_K]
    b_offs = (rk * stride_bk)[:, None] + (rn * stride_bn)[None, :]  # [BLOCK_K, BLOCK_N]
    k_lo = pid_k * K_SPLIT
    k_len = min(K_SPLIT, K - k_lo)
    k_full = k_len if EVEN_K else k_len - k_len % BLOCK_K
    a_tile = a_ptr + m0.to(tl.int64) * stride_am + k_lo.to(tl.int64) * stride_ak
    b_tile = b_ptr + n0.to(tl.int64) * stride_bn + k_lo.to(tl.int64) * stride_bk

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, k_full, BLOCK_K):
        a = tl.load(a_tile + a_offs, mask=m_mask[:, None], other=0.0)
        b = tl.load(b_tile + b_offs, mask=n_mask[None, :], other=0.0)
        acc = tl.dot(_dot_operand(a, DOT_DTYPE, ROUND_TF32), _dot_operand(b, DOT_DTYPE, ROUND_TF32), acc,
                     input_precision=INPUT_PRECISION)
        a_tile += BLOCK_K * stride_ak
        b_tile += BLOCK_K * stride_bk
    if not EVEN_K:  # the slice's last, partial K step
        k_ok = k_full + rk < k_len
        a = tl.load(a_tile + a_offs, mask=m_mask[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_tile + b_offs, mask=k_ok[:, None] & n_mask[None, :], other=0.0)
        acc = tl.dot(_dot_operand(a, DOT_DTYPE, ROUND_TF32), _dot_operand(b, DOT_DTYPE, ROUND_TF32), acc,
                     input_precision=INPUT_PRECISION)

    # Epilogue, in fp32, on the tile at (m0, n0).
    mn_mask = m_mask[:, None] & n_mask[None, :]
    if bias_ptr is not None:
        acc += tl.load(bias_ptr + n0 + rn, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    if EPILOGUE == GELU:  # keeping the pre-activation for the backward
        if pre_ptr is not None:
            pre = pre_ptr + m0.to(tl.int64) * N + n0
            tl.store(pre + (rm * N)[:, None] + rn[None, :], acc.to(pre_ptr.dtype.element_ty), mask=mn_mask)
        acc = _gelu(acc)
    elif EPILOGUE == GELU_GRAD:  # multiply by GELU'(pre-activation)
        aux = aux_ptr + m0.to(tl.int64) * stride_auxm + n0
        acc = acc * _gelu_grad(tl.load(aux + (rm * stride_auxm)[:, None] + rn[None, :], mask=mn_mask,
                                       other=0.0).to(tl.float32))
    if res_ptr is not None:
        res_tile = res_ptr + m0.to(tl.int64) * stride_resm + n0
        res = tl.load(res_tile + (rm * stride_resm)[:, None] + rn[None, :], mask=mn_mask, other=0.0).to(tl.float32)
        acc += res
    if COLSUM != NONE:  # column sums of this row tile, for bias gradients
        summed = acc if COLSUM == OF_OUTPUT else res
        sums = colsum_ptr + pid_m.to(tl.int64) * N + n0
        tl.store(sums + rn, tl.sum(tl.where(m_mask[:, None], summed, 0.0), axis=0), mask=n_mask)
    c_tile = c_ptr + pid_k.to(tl.int64) * stride_cs + m0.to(tl.int64) * stride_cm + n0
    tl.store(c_tile + (rm * stride_cm)[:, None] + rn[None, :], acc.to(c_ptr.dtype.element_ty), mask=mn_mask)


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def auto_split_k(M: int, N: int, K: int, sms: int, tile: int = 128, min_slice: int = 1024) -> int:
    """K slices for an ``[M, K]·[K, N]`` GEMM: enough for the ``tile×tile`` output tiles to cover ``sms``
    multiprocessors, each slice keeping at least ``min_slice`` of K, at most 8."""
    tiles = cdiv(M, tile) * cdiv(N, tile)
    return max(1, min(cdiv(sms, tiles), K // min_slice, 8))


def split_k_for(M: int, N: int, K: int, device: torch.device) -> int:
    """The split-K used on ``device`` for a weight gradient: :func:`auto_split_k` on CUDA, else 1."""
    if runtime.capturing is not None:
        return auto_split_k(M, N, K, runtime.capturing.sm_count)
    if device.type != "cuda":
        return 1
    return auto_split_k(M, N, K, _sm_count(device.index if device.index is not None else torch.cuda.current_device()))


# Which library runs the weight gradients ``gᵀ·x`` (plain GEMMs: small ``M×N``, long ``K``, nothing to fuse).
# Issue 23: each GEMM runs where it was measured fastest. "cublas" (``torch.mm``): on the H100 cuBLAS ran eager's
# GEMMs of these ``K = B·T·L`` rows at 445-495 TFLOP/s against our GEMM's 340; it sums K inside the GEMM and
# writes the gradient once, in its dtype, straight into the op's flat gradient buffer (no fp32 partials, nothing
# for kernels.primitives.reduce to sum). "triton": ours, split-K fp32 partials summed by kernels.primitives.reduce.
# benchmarks/test_gemms.py measures both on each card.
WEIGHT_GRAD_LIBRARY = "cublas"


def weight_grad_slices(M: int, N: int, K: int, device: torch.device, g_dtype: torch.dtype,
                       x_dtype: torch.dtype, grad_dtype: torch.dtype) -> int:
    """Partial rows (K slices) of ``[M, N]`` that :func:`weight_grad` writes for a ``grad_dtype`` gradient —
    the ``S`` of its :class:`~kernels.primitives.reduce.Partials` segment: 0 through the library (it takes
    operands of one dtype and writes theirs or fp32), :func:`split_k_for` through ours."""
    library = WEIGHT_GRAD_LIBRARY == "cublas" and g_dtype == x_dtype and grad_dtype in (g_dtype, torch.float32)
    return 0 if library else split_k_for(M, N, K, device)


def _mm_into(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """``out`` <- ``a·b`` by ``torch.mm`` (cuBLAS on a GPU), accumulated in fp32; bf16/fp16 operands may write
    fp32."""
    if a.dtype == out.dtype:
        torch.mm(a, b, out=out)
        return
    try:  # on CPU tensors only a trace takes this (benchmarks/tracing.py records it as a GPU would run it)
        torch.mm(a, b, out_dtype=out.dtype, out=out)
    except NotImplementedError:  # the CPU has no mixed-precision mm (the interpreter's runs): the product in fp32
        torch.mm(a.to(out.dtype), b.to(out.dtype), out=out)


def weight_grad(g: torch.Tensor, x: torch.Tensor, parts: Partials, segment: int, shape: tuple[int, int],
                dot: torch.dtype) -> None:
    """A weight gradient ``gᵀ·x`` ``[M, N]`` (``shape``) for g ``[K, M]``, x ``[K, N]`` into segment ``segment`` of
    ``parts`` (a :class:`~kernels.primitives.reduce.Partials` whose ``S`` came from :func:`weight_grad_slices`).
    ``S = 0``: one library GEMM, written into the gradient itself; else ours in ``S`` K slices of fp32 partials
    (``dot`` its operand dtype)."""
    slices = parts.segments[segment][0]
    if slices:
        gemm(g.t(), x, out=parts.part(segment).view(slices, *shape), split_k=slices, dot=dot)
    else:
        _mm_into(g.t(), x, parts.output(segment).view(shape))


def k_slice(K: int, split_k: int) -> int:
    """Length of each K slice: a multiple of every BLOCK_K."""
    return cdiv(cdiv(K, split_k), 64) * 64


def gemm(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    bias: Optional[torch.Tensor] = None,
    epilogue: str = "none",
    aux: Optional[torch.Tensor] = None,
    residual: Optional[torch.Tensor] = None,
    pre: Optional[torch.Tensor] = None,
    colsum: Optional[str] = None,
    colsum_out: Optional[torch.Tensor] = None,
    out: Optional[torch.Tensor] = None,
    out_dtype: Optional[torch.dtype] = None,
    dot: Optional[torch.dtype] = None,
    split_k: int = 1,
) -> torch.Tensor:
    """Launch the GEMM: a ``[M, K]``, b ``[K, N]`` (any strides) -> c.

    ``out``: where to write, ``[M, N]`` or ``[split_k, M, N]`` (unit last stride); by default a new ``[M, N]``
    tensor of ``out_dtype`` (default a's). ``pre`` ``[M, N]`` receives the GELU pre-activation. ``colsum``
    ("output" or "residual") writes per-row-tile column sums to ``colsum_out [cdiv(M, COLSUM_BLOCK_M), N]``
    fp32. ``dot``: the multiply's operand dtype (default a's); accumulation is fp32; fp32 operands use TF32 only
    where PyTorch's fp32 matmuls may (:func:`~kernels.dtypes.fp32_dot_precision`). ``split_k`` > 1 needs
    ``out`` (the partial tiles) and no epilogue.
    """
    M, K = a.shape
    N = b.shape[1]
    if out is None:
        out = torch.empty(M, N, device=a.device, dtype=out_dtype or a.dtype)
    out_strides = (0, *out.stride()) if out.dim() == 2 else out.stride()  # [M, N] is one slice
    k_split = k_slice(K, split_k)
    dot = dot or a.dtype
    meta = _meta(epilogue, bias is not None, residual is not None, colsum, dot,
                 fp32_dot_precision() if dot == torch.float32 else "tf32")
    grid = lambda meta: (cdiv(M, meta["BLOCK_M"]) * cdiv(N, meta["BLOCK_N"]), cdiv(K, k_split))  # noqa: E731
    launch(_gemm_kernel, grid, a, b, out, bias, aux, residual, pre, colsum_out,
           M, N, K, next_power_of_2(M), k_split,
           a.stride(0), a.stride(1), b.stride(0), b.stride(1), out_strides[0], out_strides[1],
           0 if aux is None else aux.stride(0), 0 if residual is None else residual.stride(0),
           name="gemm", **meta)
    return out if out.dim() == 2 else out[0]


@functools.lru_cache(maxsize=None)
def _meta(epilogue: str, has_bias: bool, has_res: bool, colsum: Optional[str], dot: torch.dtype, precision: str) -> dict:
    """The constexpr arguments of one GEMM variant (made once per variant: host time matters, see issue 9)."""
    # The precision is part of the variant: the autotuner keys its cache on the variant, and IEEE fp32 tiles differ.
    variant = f"e{epilogue}-b{has_bias:d}-r{has_res:d}-c{colsum}-{precision}"
    return dict(VARIANT=variant, EPILOGUE=EPILOGUES[epilogue], COLSUM=COLSUM_OF[colsum], DOT_DTYPE=dot_dtype(dot),
                INPUT_PRECISION=precision, ROUND_TF32=dot == torch.float32 and precision == "tf32")


def colsum_rows(M: int) -> int:
    """Row tiles a ``colsum`` GEMM writes one partial row for."""
    return cdiv(M, COLSUM_BLOCK_M)
