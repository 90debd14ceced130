"""GEMM with fused epilogues, and the ``linear`` op built on it.

``C[M, N] = epilogue(A[M, K] @ B[K, N])`` with, in order: ``+ bias[n]``; ``+ bias2[n]`` on rows with
``m % bias2_period != 0`` (the TED-Adapter adds ``b4`` to patch rows only, never to CLS rows);
then GELU (optionally storing the pre-activation) or multiplication by ``GELU'(aux[m, n])``; then
``+ residual[m, n]``. A and B are read through arbitrary strides, so transposed operands cost nothing.

Split-K, for plain GEMMs with an fp32 output (the weight gradients ``gᵀ·x``: small ``M×N``, long ``K``,
too few output tiles to fill the GPU): the K range is cut into ``S`` slices, each program writes its
slice's fp32 partial tile to ``C[s]`` and the host sums over ``s`` — deterministic, no atomics.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from .utils import INTERPRET, can_run_triton, cdiv, check, check_tensors, compute_dtype
from .utils import dot_dtype, fp32_dot_precision, record_launch

EPILOGUES = {"none": 0, "gelu": 1, "gelu_grad": 2}
_SQRT1_2 = tl.constexpr(0.7071067811865476)
_INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


def _configs() -> list[triton.Config]:
    if INTERPRET:  # the interpreter crashes on several configs; one small tile keeps it fast
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4})]
    return [
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=3, num_warps=8),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=3, num_warps=8),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=4, num_warps=4),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=4, num_warps=4),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=4, num_warps=4),
    ]


@triton.jit
def _gelu(x):
    return 0.5 * x * (1.0 + tl.math.erf(x * _SQRT1_2))


@triton.jit
def _gelu_grad(x):
    return 0.5 * (1.0 + tl.math.erf(x * _SQRT1_2)) + x * tl.exp(-0.5 * x * x) * _INV_SQRT_2PI


def _fitting_configs(configs: list[triton.Config], named_args: dict, **_) -> list[triton.Config]:
    """Drop tiles far larger than the problem (a 128×256 tile on 40 rows only costs compile time);
    the smallest tile always stays."""
    m, n = (max(64, triton.next_power_of_2(named_args[d])) for d in ("M", "N"))
    fitting = [c for c in configs if c.kwargs["BLOCK_M"] <= m and c.kwargs["BLOCK_N"] <= n]
    return fitting or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]


@triton.autotune(configs=_configs(), key=["M_BUCKET", "N", "K", "K_SPLIT", "INPUT_PRECISION"],
                 prune_configs_by={"early_config_prune": _fitting_configs})
@triton.jit
def _gemm_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr, bias2_ptr, aux_ptr, res_ptr, pre_ptr,
    M, N, K, M_BUCKET, K_SPLIT,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cs, stride_cm, stride_auxm, stride_resm,
    bias2_period,
    HAS_BIAS: tl.constexpr, HAS_BIAS2: tl.constexpr, EPILOGUE: tl.constexpr, STORE_PRE: tl.constexpr,
    HAS_RES: tl.constexpr, DOT_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # Grouped tile order: GROUP_M row-tiles share B tiles in L2. Axis 1: the K slice (split-K).
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_m, num_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_n
    first_m = (pid // group) * GROUP_M
    group_rows = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % group_rows
    pid_n = (pid % group) // group_rows

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    k_lo = pid_k.to(tl.int64) * K_SPLIT  # this slice: K_SPLIT columns of K, a multiple of BLOCK_K
    rk = tl.arange(0, BLOCK_K)
    m_mask, n_mask = rm < M, rn < N
    rm64, rn64, rk64 = rm.to(tl.int64), rn.to(tl.int64), k_lo + rk  # offsets can pass 2**31
    a_ptrs = a_ptr + rm64[:, None] * stride_am + rk64[None, :] * stride_ak  # [BLOCK_M, BLOCK_K]
    b_ptrs = b_ptr + rk64[:, None] * stride_bk + rn64[None, :] * stride_bn  # [BLOCK_K, BLOCK_N]

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K_SPLIT, BLOCK_K):
        k_mask = (rk64 + k0) < K
        a = tl.load(a_ptrs, mask=m_mask[:, None] & k_mask[None, :], other=0.0).to(DOT_DTYPE)
        b = tl.load(b_ptrs, mask=k_mask[:, None] & n_mask[None, :], other=0.0).to(DOT_DTYPE)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    # Epilogue, in fp32.
    mn_mask = m_mask[:, None] & n_mask[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=n_mask, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS2:
        gated = (rm % bias2_period) != 0
        bias2 = tl.load(bias2_ptr + rn, mask=n_mask, other=0.0).to(tl.float32)
        acc += tl.where(gated[:, None], bias2[None, :], 0.0)
    if EPILOGUE == 1:
        if STORE_PRE:
            tl.store(pre_ptr + rm64[:, None] * stride_cm + rn64[None, :], acc.to(pre_ptr.dtype.element_ty), mask=mn_mask)
        acc = _gelu(acc)
    elif EPILOGUE == 2:
        aux = tl.load(aux_ptr + rm64[:, None] * stride_auxm + rn64[None, :], mask=mn_mask, other=0.0)
        acc = acc * _gelu_grad(aux.to(tl.float32))
    if HAS_RES:
        acc += tl.load(res_ptr + rm64[:, None] * stride_resm + rn64[None, :], mask=mn_mask, other=0.0).to(tl.float32)
    c_ptr += pid_k.to(tl.int64) * stride_cs
    tl.store(c_ptr + rm64[:, None] * stride_cm + rn64[None, :], acc.to(c_ptr.dtype.element_ty), mask=mn_mask)


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def auto_split_k(M: int, N: int, K: int, sms: int, tile: int = 128, min_slice: int = 1024) -> int:
    """K slices for an ``[M, K]·[K, N]`` GEMM: enough for the ``tile×tile`` output tiles to cover ``sms``
    multiprocessors, each slice keeping at least ``min_slice`` of K, at most 8."""
    tiles = cdiv(M, tile) * cdiv(N, tile)
    return max(1, min(cdiv(sms, tiles), K // min_slice, 8))


def _rows(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """A row-major view (unit column stride) for epilogue operands."""
    return None if t is None else (t if t.stride(-1) == 1 else t.contiguous())


def gemm(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    bias: Optional[torch.Tensor] = None,
    bias2: Optional[torch.Tensor] = None,
    bias2_period: int = 1,
    epilogue: str = "none",
    aux: Optional[torch.Tensor] = None,
    residual: Optional[torch.Tensor] = None,
    store_pre: bool = False,
    out_dtype: Optional[torch.dtype] = None,
    dot: Optional[torch.dtype] = None,
    split_k: Optional[int] = None,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Launch the GEMM: a ``[M, K]``, b ``[K, N]`` (any strides) -> (c ``[M, N]``, pre-activation or None).

    ``dot`` is the operand dtype of the multiply (default: a's); accumulation is fp32. fp32 operands use
    TF32 only where PyTorch's fp32 matmuls may (:func:`~kernels.utils.fp32_dot_precision`). ``split_k``:
    K slices (plain GEMMs with an fp32 output only); by default :func:`auto_split_k` on CUDA, else 1.
    """
    M, K = a.shape
    N = b.shape[1]
    out_dtype = out_dtype or a.dtype
    plain = epilogue == "none" and out_dtype == torch.float32 and all(t is None for t in (bias, bias2, residual))
    if split_k is None and plain and a.is_cuda:
        device = a.device.index if a.device.index is not None else torch.cuda.current_device()
        split_k = auto_split_k(M, N, K, _sm_count(device))
    split_k = split_k or 1
    check(split_k == 1 or plain, "gemm: split-K needs a plain GEMM (no epilogue) with an fp32 output")
    k_split = cdiv(cdiv(K, split_k), 64) * 64  # a multiple of every BLOCK_K
    split_k = cdiv(K, k_split)  # no empty slice
    c = torch.empty(split_k, M, N, device=a.device, dtype=out_dtype)
    pre = torch.empty(M, N, device=a.device, dtype=out_dtype) if store_pre else None
    aux, residual = _rows(aux), _rows(residual)
    dot = dot or a.dtype
    dummy = c
    grid = lambda meta: (cdiv(M, meta["BLOCK_M"]) * cdiv(N, meta["BLOCK_N"]), split_k)  # noqa: E731
    _gemm_kernel[grid](
        a, b, c,
        dummy if bias is None else bias, dummy if bias2 is None else bias2,
        dummy if aux is None else aux, dummy if residual is None else residual, dummy if pre is None else pre,
        M, N, K, triton.next_power_of_2(M), k_split,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
        0 if aux is None else aux.stride(0), 0 if residual is None else residual.stride(0),
        bias2_period,
        HAS_BIAS=bias is not None, HAS_BIAS2=bias2 is not None, EPILOGUE=EPILOGUES[epilogue],
        STORE_PRE=store_pre, HAS_RES=residual is not None, DOT_DTYPE=dot_dtype(dot),
        INPUT_PRECISION=fp32_dot_precision() if dot == torch.float32 else "tf32",  # ignored for 16-bit dots
    )
    record_launch("gemm")
    return (c[0] if split_k == 1 else c.sum(0)), pre


# --- the linear op: y = act(x·Wᵀ + b) + residual ------------------------------------------------

@torch.library.custom_op("m2clip_fast::linear", mutates_args=())
def _linear_op(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], residual: Optional[torch.Tensor], gelu: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    x2 = x.reshape(-1, x.shape[-1])
    res2 = None if residual is None else residual.reshape(-1, weight.shape[0])
    out, pre = gemm(x2, weight.t(), bias=bias, residual=res2, epilogue="gelu" if gelu else "none", store_pre=gelu)
    shape = (*x.shape[:-1], weight.shape[0])
    return out.view(shape), (pre.view(shape) if gelu else x.new_empty(0))


@_linear_op.register_fake
def _(x, weight, bias, residual, gelu):
    shape = (*x.shape[:-1], weight.shape[0])
    return x.new_empty(shape), (x.new_empty(shape) if gelu else x.new_empty(0))


@torch.library.custom_op("m2clip_fast::linear_backward", mutates_args=())
def _linear_backward_op(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, pre: torch.Tensor, has_bias: bool, gelu: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = grad.reshape(-1, weight.shape[0])
    if gelu:  # dL/d(pre) = grad · GELU'(pre), elementwise
        g = torch.ops.aten.gelu_backward(g, pre.reshape(g.shape))
    x2 = x.reshape(-1, x.shape[-1])
    dx, _ = gemm(g, weight)
    dw, _ = gemm(g.t(), x2, out_dtype=weight.dtype, dot=x.dtype)
    db = g.sum(0, dtype=torch.float32).to(weight.dtype) if has_bias else weight.new_empty(0)
    return dx.view(x.shape), dw, db


@_linear_backward_op.register_fake
def _(grad, x, weight, pre, has_bias, gelu):
    return torch.empty_like(x), torch.empty_like(weight), weight.new_empty(weight.shape[0] if has_bias else 0)


def _linear_setup(ctx, inputs, output):
    x, weight, bias, residual, gelu = inputs
    ctx.save_for_backward(x, weight, output[1])
    ctx.has_bias, ctx.has_res, ctx.gelu = bias is not None, residual is not None, gelu


def _linear_backward(ctx, grad, _grad_pre):
    x, weight, pre = ctx.saved_tensors
    dx, dw, db = _linear_backward_op(grad.contiguous(), x, weight, pre, ctx.has_bias, ctx.gelu)
    return dx, dw, (db if ctx.has_bias else None), (grad if ctx.has_res else None), None


_linear_op.register_autograd(_linear_backward, setup_context=_linear_setup)


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
    return _linear_op(x, weight, bias, residual, gelu)[0]
