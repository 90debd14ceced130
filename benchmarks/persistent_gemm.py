"""A candidate for the TED-Adapter's GEMMs, measured beside ours and cuBLAS in ``benchmarks/test_gemms.py``
(issue 23): a persistent GEMM whose operands move by TMA (host-side tensor descriptors).

``C[M, N] = A[M, K] · B[K, N] (+ residual[M, N])``, fp32 accumulation. One program per SM walks the output
tiles ``SM, SM + programs, …`` in grouped order (``GROUP_M`` row tiles share B tiles in L2), so no program
pays a launch or a pipeline fill per tile beyond its first, and Triton can overlap one tile's epilogue with
the next tile's loads (``tl.range(..., flatten=True)``). Operands may be stored either way round: a
transposed operand (``aᵀ``: the weight gradients' ``doutᵀ``) is loaded as stored and transposed in shared
memory, which the warpgroup MMA reads directly. The weight gradients (few output tiles, long K) split K into
fp32 partials, summed later as the op sums its own. It lives here, not in ``kernels/``, until a measurement shows
it beats what the op runs (DESIGN §2.1).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor


class Tiles(NamedTuple):
    block_m: int = 128
    block_n: int = 128
    block_k: int = 64
    warps: int = 8
    stages: int = 4
    group_m: int = 8


# Candidates for the benchmark shapes (K = 768 or 12608): cuBLAS picked 192×192 tiles there, one warpgroup
# per 64 rows; 128×256 holds 128 fp32 accumulators a thread at 8 warps.
TILES = {"128x128": Tiles(), "128x256": Tiles(block_n=256, stages=3)}
_TILES_INTERPRETED = Tiles(32, 32, 32, 4, 1, 4)  # the interpreter: small tiles keep CPU tests fast
SM90_SHARED_OPTIN = 232448  # bytes of shared memory a program may take on an H100/H200 (the driver's opt-in limit)
_DRIVER_SHARED = 1024  # of which the driver keeps 1 KB a block (Nsight Compute's "driver shared memory per block")


@triton.jit
def _persistent_gemm_kernel(a_desc, b_desc, c_desc, r_desc, M, N, K, K_SLICE, A_T: tl.constexpr, B_T: tl.constexpr,
                            SPLIT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                            BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, PROGRAMS: tl.constexpr,
                            INPUT_PRECISION: tl.constexpr):
    """Grid ``(PROGRAMS,)``. ``a_desc`` holds A ``[M, K]`` blocks ``[BLOCK_M, BLOCK_K]``, or with ``A_T`` Aᵀ
    ``[K, M]`` blocks ``[BLOCK_K, BLOCK_M]``; ``b_desc`` B ``[K, N]`` blocks ``[BLOCK_K, BLOCK_N]``, or with
    ``B_T`` Bᵀ ``[N, K]``; ``c_desc`` ``[SPLIT·M, N]`` and ``r_desc`` (None: no residual) ``[M, N]``, blocks
    ``[BLOCK_M, BLOCK_N]``. A work unit is an output tile and a K slice of ``K_SLICE`` (a multiple of
    ``BLOCK_K``); slice ``s`` writes rows ``s·M …`` of C (split-K partials, summed later). Out-of-range rows and
    columns read as zero and are not stored (TMA bounds them; ``M`` must be a multiple of ``BLOCK_M`` when
    ``SPLIT > 1``, so that slices do not overlap)."""
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    for unit in tl.range(tl.program_id(0), tiles_m * tiles_n * SPLIT, PROGRAMS, flatten=True):
        tile, part = unit % (tiles_m * tiles_n), unit // (tiles_m * tiles_n)
        first_m = (tile // per_group) * GROUP_M
        group_rows = min(tiles_m - first_m, GROUP_M)
        m0 = (first_m + tile % group_rows) * BLOCK_M
        n0 = ((tile % per_group) // group_rows) * BLOCK_N
        k_lo = part * K_SLICE
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for step in range(tl.cdiv(min(K_SLICE, K - k_lo), BLOCK_K)):
            k0 = k_lo + step * BLOCK_K
            a = a_desc.load([k0, m0]).T if A_T else a_desc.load([m0, k0])  # [BLOCK_M, BLOCK_K]
            b = b_desc.load([n0, k0]).T if B_T else b_desc.load([k0, n0])  # [BLOCK_K, BLOCK_N]
            acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)  # fp32 operands: PyTorch's TF32 setting
        if r_desc is not None:
            acc += r_desc.load([m0, n0]).to(tl.float32)
        c_desc.store([part * M + m0, n0], acc.to(c_desc.dtype))


def _operand(x: torch.Tensor, rows: int, cols: int) -> tuple[TensorDescriptor, bool]:
    """A descriptor of ``x`` ``[R, C]`` with ``[rows, cols]`` blocks as stored: row-major as is, or (unit row
    stride) through its transpose with ``[cols, rows]`` blocks — then the kernel transposes the tile."""
    if x.stride(1) == 1 or x.stride(0) != 1:
        stored, blocks, transposed = x, [rows, cols], False
    else:
        stored, blocks, transposed = x.t(), [cols, rows], True
    if stored.stride(1) != 1 or (stored.stride(0) * x.element_size()) % 16 or x.data_ptr() % 16:
        raise ValueError(f"persistent_gemm: TMA needs an operand with unit stride along one dimension and 16-byte "
                         f"aligned rows, got shape {tuple(x.shape)}, strides {tuple(x.stride())}, {x.dtype}")
    return TensorDescriptor.from_tensor(stored, blocks), transposed


def fitted(t: Tiles, operand_bytes: int, out_bytes: int, limit: int = SM90_SHARED_OPTIN) -> Tiles:
    """``t`` with as many pipeline stages (at most its own) as fit a card's ``limit`` bytes of shared memory a
    program, less the driver's: each stage holds an A and a B tile, and the output tile is staged there for its
    TMA store (fp32 operands or split-K's fp32 partials need fewer stages than bf16)."""
    per_stage = (t.block_m + t.block_n) * t.block_k * operand_bytes
    stages = min(t.stages, (limit - _DRIVER_SHARED - t.block_m * t.block_n * out_bytes) // per_stage)
    if stages < 2:
        raise ValueError(f"persistent_gemm: a {t.block_m}×{t.block_n} tile with {operand_bytes}-byte operands and "
                         f"{out_bytes}-byte outputs needs more than the {limit} bytes of shared memory this card has")
    return t._replace(stages=stages)


def split_for(M: int, N: int, tiles: Tiles, sms: int) -> int:
    """K slices that fill the SMs when the output has fewer tiles than SMs (the weight gradients): at most 8,
    and 1 unless ``M`` is a multiple of the row tile (slices are stacked along M)."""
    if M % tiles.block_m:
        return 1
    return max(1, min(8, sms // (triton.cdiv(M, tiles.block_m) * triton.cdiv(N, tiles.block_n))))


def persistent_gemm(a: torch.Tensor, b: torch.Tensor, residual: Optional[torch.Tensor] = None,
                    tiles: Optional[Tiles] = None, split: int = 1) -> torch.Tensor:
    """a ``[M, K]``, b ``[K, N]`` (each row-major or transposed, rows 16-byte aligned), residual ``[M, N]`` or
    None -> ``a·b (+ residual)`` ``[M, N]`` in a's dtype; with ``split`` > 1 (no residual) the fp32 split-K
    partials ``[split, M, N]`` instead, whose sum is ``a·b``."""
    interpreted = a.device.type == "cpu"
    t = _TILES_INTERPRETED if interpreted else (tiles or TILES["128x128"])
    (M, K), N = a.shape, b.shape[1]
    if split > 1 and (residual is not None or M % t.block_m):
        raise ValueError(f"persistent_gemm: split-K needs no residual and M a multiple of {t.block_m}, got M = {M}")
    out = torch.empty(split * M, N, device=a.device, dtype=torch.float32 if split > 1 else a.dtype)
    if not interpreted:
        limit = getattr(torch.cuda.get_device_properties(a.device), "shared_memory_per_block_optin", SM90_SHARED_OPTIN)
        t = fitted(t, a.element_size(), out.element_size(), limit)
    k_slice = triton.cdiv(triton.cdiv(K, split), t.block_k) * t.block_k
    a_desc, a_t = _operand(a, t.block_m, t.block_k)
    b_desc, b_t = _operand(b, t.block_k, t.block_n)
    c_desc = TensorDescriptor.from_tensor(out, [t.block_m, t.block_n])
    r_desc = None if residual is None else TensorDescriptor.from_tensor(residual, [t.block_m, t.block_n])
    sms = 4 if interpreted else torch.cuda.get_device_properties(a.device).multi_processor_count
    programs = min(sms, triton.cdiv(M, t.block_m) * triton.cdiv(N, t.block_n) * split)
    _persistent_gemm_kernel[(programs,)](a_desc, b_desc, c_desc, r_desc, M, N, K, k_slice, A_T=a_t, B_T=b_t,
                                         SPLIT=split, BLOCK_M=t.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k,
                                         GROUP_M=t.group_m, PROGRAMS=programs,
                                         INPUT_PRECISION="tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee",
                                         num_warps=t.warps,
                                         num_stages=t.stages)
    return out.view(split, M, N) if split > 1 else out
