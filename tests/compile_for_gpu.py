"""Compile every Triton kernel variant the launchers use for an sm_90 GPU (H100/H200) — PTX and cubin
through Triton's bundled ptxas — without a GPU. Run with TRITON_INTERPRET unset (the interpreter
never compiles, so it misses what only the GPU compiler rejects). Prints one line per variant, then
checks the Hopper code of the bf16 GEMM."""
import inspect
import itertools
import os
import sys
from typing import Optional

assert os.environ.get("TRITON_INTERPRET", "0") != "1", "run without TRITON_INTERPRET"

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import kernels.ops  # noqa: E402,F401  (loads the kernel modules)

gemm, stencil = sys.modules["kernels.gemm"], sys.modules["kernels.stencil"]
TARGET = GPUTarget("cuda", 90, 32)


def compile_kernel(fn, pointers: dict, constexprs: dict, aligned: tuple = (), options: Optional[dict] = None):
    """Compile for ``TARGET``; ``aligned`` names the integer and pointer arguments that a real launch would
    see divisible by 16 (Triton specialises on that, and on integers equal to 1, given as constexprs)."""
    names = list(inspect.signature(fn.fn).parameters)
    signature = {n: "constexpr" if n in constexprs else pointers.get(n, "i32") for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    source = ASTSource(fn, signature, {(names.index(k),): v for k, v in constexprs.items()}, attrs)
    return triton.compile(source, target=TARGET, options=options)


def check_hopper_gemm_codegen() -> None:
    """The bf16 GEMM as launched at ViT-B/16 shapes — activations (A row-major) and weight gradients
    (A = gᵀ, column-major) — must use Hopper's wgmma with a multi-stage shared-memory pipeline."""
    config = gemm._configs()[0]
    one_stage = (config.kwargs["BLOCK_M"] + config.kwargs["BLOCK_N"]) * config.kwargs["BLOCK_K"] * 2  # bf16 bytes
    ptrs = dict.fromkeys(["a_ptr", "b_ptr", "c_ptr", "bias_ptr", "bias2_ptr", "aux_ptr", "res_ptr", "pre_ptr"], "*bf16")
    flags = dict(HAS_BIAS=False, HAS_BIAS2=False, EPILOGUE=0, STORE_PRE=False, HAS_RES=False, DOT_DTYPE=tl.bfloat16,
                 INPUT_PRECISION="tf32", stride_bn=1, **config.kwargs)
    ints = ["M", "N", "K", "M_BUCKET", "K_SPLIT", "stride_bk", "stride_cs", "stride_cm", "stride_auxm", "stride_resm"]
    for layout, unit, strided in (("A row-major", "stride_ak", "stride_am"), ("A column-major", "stride_am", "stride_ak")):
        kernel = compile_kernel(gemm._gemm_kernel.fn, ptrs, {**flags, unit: 1}, aligned=(*ptrs, *ints, strided),
                                options=dict(num_warps=config.num_warps, num_stages=config.num_stages))
        shared = kernel.metadata.shared
        assert "wgmma" in kernel.asm["ptx"], f"bf16 GEMM, {layout}: no wgmma in the sm_90 PTX"
        assert shared >= 2 * one_stage, f"bf16 GEMM, {layout}: {shared} B of shared memory, no pipelining"
        print(f"gemm bf16 {layout} on sm_90: wgmma, {shared // 1024} KiB shared: ok", flush=True)


def main() -> None:
    dtypes = {"fp32": tl.float32, "bf16": tl.bfloat16, "fp16": tl.float16}
    # (HAS_TE, HAS_TD, TE in-bias, TD in-bias, conv biases, TD_DIFF, TD_SPATIAL, HAS_CLS) of each launcher:
    # TED-Adapter, temporal adapter, temporal_conv, temporal_difference, spatial_conv.
    launches = [(True, True, True, True, True, True, True, True), (True, False, True, False, True, True, True, True),
                (True, False, False, False, True, False, False, False), (False, True, False, False, False, True, False, False),
                (False, True, False, False, True, False, True, False)]
    for (te, td, te_in, td_in, bias, diff, spatial, cls), dt in itertools.product(launches, ("fp32", "bf16")):
        ptr = "*" + dt
        flags = dict(HAS_TE=te, HAS_TD=td, TE_IN_BIAS=te_in, TD_IN_BIAS=td_in, TD_DIFF=diff, TD_SPATIAL=spatial,
                     HAS_CLS=cls, BLOCK_C=128)
        fwd_ptrs = ["z_ptr", "h_ptr", "te_in_bias_ptr", "te_w_ptr", "te_bias_ptr", "td_in_bias_ptr", "td_w_ptr",
                    "td_bias_ptr"]
        compile_kernel(stencil._stencil_fwd_kernel, dict.fromkeys(fwd_ptrs, ptr),
                       {**flags, "TE_BIAS": bias and te, "TD_BIAS": bias and td})
        bwd_ptrs = ["dh_ptr", "z_ptr", "dz_ptr", "te_in_bias_ptr", "te_w_ptr", "td_in_bias_ptr", "td_w_ptr"]
        compile_kernel(stencil._stencil_bwd_kernel,
                       {**dict.fromkeys(bwd_ptrs, ptr), "te_part_ptr": "*fp32", "td_part_ptr": "*fp32"},
                       {**flags, "ROWS": 32})
        print(f"stencil TE={te} TD={td} DIFF={diff} SPATIAL={spatial} {dt}: ok", flush=True)
    config = gemm._configs()[0].kwargs
    # (EPILOGUE, STORE_PRE, HAS_RES, HAS_BIAS2): TED GEMM-out, text fc1 (GELU), text backward (GELU'), plain
    # fp32 operands: TF32 or IEEE multiplies, as PyTorch's fp32 matmul setting says.
    variants = [("fp32", "tf32"), ("fp32", "ieee"), ("bf16", "tf32"), ("fp16", "tf32")]
    for (epi, pre, res, bias2), (dt, precision) in itertools.product(
            [(0, False, True, True), (1, True, False, False), (2, False, True, False), (0, False, False, False)], variants):
        ptrs = dict.fromkeys(["a_ptr", "b_ptr", "c_ptr", "bias_ptr", "bias2_ptr", "aux_ptr", "res_ptr", "pre_ptr"], "*" + dt)
        compile_kernel(gemm._gemm_kernel.fn, ptrs, dict(HAS_BIAS=True, HAS_BIAS2=bias2, EPILOGUE=epi, STORE_PRE=pre,
                                                        HAS_RES=res, DOT_DTYPE=dtypes[dt], INPUT_PRECISION=precision,
                                                        **config))
        print(f"gemm EPILOGUE={epi} PRE={pre} RES={res} BIAS2={bias2} {dt} {precision}: ok", flush=True)
    check_hopper_gemm_codegen()


if __name__ == "__main__":
    main()
