"""GEMM candidates that are measured but not yet run by the ops (:mod:`benchmarks.persistent_gemm`), compiled
for sm_90 as the benchmark launches them: registers, spills, shared memory, and whether the binary uses TMA
and the warpgroup MMA."""
from __future__ import annotations

import torch
import triton
from triton.compiler import ASTSource
from triton.runtime.jit import mangle_type
from triton.tools.tensor_descriptor import TensorDescriptor

from kernels.packing import AUX_COLUMNS

from ..gemm_cases import GEMMS
from ..persistent_gemm import TILES, _persistent_gemm_kernel, fitted, split_for
from ..time_model import timing
from .compile import TARGET, _compile

# (A stored transposed, B stored transposed, split-K): the layouts of the TED-Adapter's GEMMs — x·W_inᵀ and
# dout·W_aug[:2Ca]ᵀ (B_T), h·W_aug and dz·W_in (neither), hᵀ·dout and dzᵀ·x (A_T, split along K)
LAYOUTS = ((False, True, False), (False, False, False), (True, False, True))


def _descriptor(rows: int, cols: int) -> str:
    return mangle_type(TensorDescriptor.from_tensor(torch.empty(1024, 1024, dtype=torch.bfloat16), [rows, cols]))


def persistent_gemm_variants(sms: int = 132) -> list[dict]:
    """Every tile size and operand layout of the persistent TMA candidate (bf16, no residual), compiled."""
    rows = []
    for name, tiles in TILES.items():
        for a_t, b_t, split in LAYOUTS:
            t = fitted(tiles, 2, 4 if split else 2)  # as persistent_gemm launches it on an H100/H200
            signature = {"a_desc": _descriptor(t.block_k, t.block_m) if a_t else _descriptor(t.block_m, t.block_k),
                         "b_desc": _descriptor(t.block_n, t.block_k) if b_t else _descriptor(t.block_k, t.block_n),
                         "c_desc": _descriptor(t.block_m, t.block_n), "r_desc": "constexpr",
                         "M": "i32", "N": "i32", "K": "i32", "K_SLICE": "i32"}
            constexprs = {"r_desc": None, "A_T": a_t, "B_T": b_t, "SPLIT": 3 if split else 1, "BLOCK_M": t.block_m,
                          "BLOCK_N": t.block_n,
                          "BLOCK_K": t.block_k, "GROUP_M": t.group_m, "PROGRAMS": sms, "INPUT_PRECISION": "tf32"}
            signature.update({k: "constexpr" for k in constexprs if k != "r_desc"})
            c = _compile(_persistent_gemm_kernel, tuple(signature.items()), tuple(constexprs.items()), (), t.warps,
                         t.stages)
            ptx = triton.compile(ASTSource(_persistent_gemm_kernel, signature, constexprs, {}), target=TARGET,
                                 options=dict(num_warps=t.warps, num_stages=t.stages)).asm["ptx"]
            rows.append(dict(tiles=name, a_transposed=a_t, b_transposed=b_t, registers=c.registers, spills=c.spills,
                             shared=c.shared, wgmma=c.wgmma, tma_loads=ptx.count("cp.async.bulk.tensor")))
    return rows


def ted_gemm_shapes(R: int, C: int, Ca: int, aux: int = AUX_COLUMNS) -> dict[str, tuple[int, int, int, bool, tuple[bool, bool]]]:
    """The TED-Adapter's GEMMs as the candidate would run them (biases in an augmented K of ``aux`` columns):
    name -> (M, N, K, residual, (A stored transposed, B stored transposed))."""
    w = 2 * Ca
    shapes = [(R, w, C, False, (False, True)), (R, C, w + aux, True, (False, False)), (R, w, C, False, (False, True)),
              (C, w + aux, R, False, (True, False)), (R, C, w, True, (False, False)), (w, C, R, False, (True, False))]
    return dict(zip(GEMMS, shapes))  # in, out, dh, dW_aug (as its transpose, doutᵀ·h), dx, dW_in: the op's order


def predict_persistent(shapes: dict, variants: list[dict], card: dict, element_size: int = 2) -> dict[str, dict]:
    """Predicted µs of each GEMM in ``shapes`` for every tile size of the candidate (:func:`time_model.timing`):
    one resident program per SM walks the work units (tiles, × K slices for the weight gradients), so the busy
    share is that of the units, and the pipeline fills once per program rather than once per unit; the split-K
    partials are charged their fp32 write and read."""
    out: dict[str, dict] = {}
    for name, (M, N, K, residual, layout) in shapes.items():
        for v in variants:
            if (v["a_transposed"], v["b_transposed"]) != layout:
                continue
            t = TILES[v["tiles"]]
            split = split_for(M, N, t, card["sms"]) if layout[0] else 1  # the weight gradients split along K
            tiles = triton.cdiv(M, t.block_m) * triton.cdiv(N, t.block_n) * split
            per_program = tiles / min(tiles, card["sms"])
            partials = 2 * split * M * N * 4 if split > 1 else 0  # fp32 partials written, then read to be summed
            hbm = (M * K + K * N + M * N * (2 if residual else 1)) * element_size + partials
            l2 = (M * K * triton.cdiv(N, t.block_n) + K * N * triton.cdiv(M, t.block_m)) * element_size + hbm \
                - (M * K + K * N) * element_size
            features = dict(programs=tiles, warps=t.warps, registers=v["registers"], shared=v["shared"], bytes=hbm,
                            l2_bytes=l2, flops=2.0 * M * N * K, warp_instructions=0.0,
                            k_steps=triton.cdiv(K, t.block_k * split) * per_program, stages=t.stages, chains=[],
                            dot_fp32=False)
            out.setdefault(name, {})[v["tiles"]] = timing(features, card)["predicted_us"]
    return out


def predict_library(shapes: dict, card: dict, element_size: int = 2) -> dict[str, float]:
    """Predicted µs of each GEMM in ``shapes`` through cuBLAS (``torch.mm`` / ``addmm``): its FLOPs at the rate
    cuBLAS reached on eager's GEMMs of these rows on the H100 (``card["cublas_bf16"]``) or its bytes at the HBM
    bandwidth, whichever is longer, plus a launch; the weight gradients written once in the parameters' dtype
    (taken as the operands'), no partials to sum."""
    out = {}
    for name, (M, N, K, residual, _) in shapes.items():
        hbm = (M * K + K * N) * element_size + M * N * element_size * (2 if residual else 1)
        out[name] = max(hbm / card["hbm_achieved"], 2.0 * M * N * K / card["cublas_bf16"]) * 1e6 + card["launch_us"]
    return out
