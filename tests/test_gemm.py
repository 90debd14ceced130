"""kernels/primitives/gemm.py, the GEMM primitive the ops are built on: epilogues, column-block operands, split-K, tile
choice, fp32 precision — against PyTorch (fp64) on the ``kernel_device``."""
import pytest
import torch

import kernels

from .parity import FP32_TOL, TF32_TOL, cuda, rel_err, tf32_matmuls
import triton

from kernels.primitives import gemm as gemm_ops
from kernels.primitives.reduce import Partials


@pytest.mark.parametrize("epilogue, residual", [("none", False), ("none", True), ("gelu", False), ("gelu", True)])
def test_gemm_epilogues_match_reference(kernel_device, epilogue, residual):
    """``act(a·b + bias) + residual`` in the GEMM's epilogue, with the GELU's pre-activation kept."""
    g = torch.Generator().manual_seed(0)
    a, b, bias, r = (t.to(kernel_device) for t in (
        torch.randn(33, 40, generator=g), torch.randn(40, 36, generator=g), torch.randn(36, generator=g),
        torch.randn(33, 36, generator=g)))
    pre = torch.empty(33, 36, device=kernel_device) if epilogue == "gelu" else None
    out = gemm_ops.gemm(a, b, bias=bias, residual=r if residual else None, epilogue=epilogue, pre=pre)
    exact_pre = a.double().cpu() @ b.double().cpu() + bias.double().cpu()
    exact = torch.nn.functional.gelu(exact_pre) if epilogue == "gelu" else exact_pre
    assert rel_err(out.cpu(), exact + (r.double().cpu() if residual else 0)) < FP32_TOL
    if pre is not None:
        assert rel_err(pre.cpu(), exact_pre) < FP32_TOL


def test_gemm_autotunes_only_tiles_that_fit_the_problem():
    gemm = gemm_ops
    tiles = [(128, 128), (128, 256), (128, 64), (64, 128), (64, 64)]
    configs = [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": 64, "GROUP_M": 8}) for m, n in tiles]

    def kept(M, N):
        return [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in gemm._fitting_configs(configs, dict(M=M, N=N))]

    assert kept(40, 36) == [(64, 64)]  # test-sized: one compile instead of five
    assert kept(8 * 8 * 197, 768) == tiles  # ViT-B/16 at B=8, T=8: the whole list
    assert kept(12608, 64) == [(128, 64), (64, 64)]
    # Column sums are written per COLSUM_BLOCK_M rows: only that row tile may run.
    rows = [gemm.COLSUM_BLOCK_M, 2 * gemm.COLSUM_BLOCK_M]
    configs = [triton.Config({"BLOCK_M": m, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}) for m in rows]
    colsum = gemm._fitting_configs(configs, dict(M=12608, N=768), COLSUM=2)
    assert [c.kwargs["BLOCK_M"] for c in colsum] == [gemm.COLSUM_BLOCK_M]


@pytest.mark.parametrize("split_k, K", [(1, 70), (3, 200), (4, 130)])
def test_split_k_gemm_matches_matmul(kernel_device, split_k, K):
    """K cut into slices (fp32 partial tiles summed on the host); 4 slices of K = 130 leave 3 non-empty."""
    gemm = gemm_ops.gemm
    g = torch.Generator().manual_seed(K)
    a, b = (torch.randn(*shape, generator=g).to(kernel_device) for shape in ((K, 40), (K, 24)))
    out = torch.full((split_k, 40, 24), float("nan"), device=kernel_device)
    with tf32_matmuls(False):
        gemm(a.t(), b, out=out, split_k=split_k)  # a weight gradient: aᵀ·b, as fp32 partial tiles
    slices = -(-K // gemm_ops.k_slice(K, split_k))
    assert torch.isnan(out[slices:]).all() and not torch.isnan(out[:slices]).any()  # no empty slice was written
    assert rel_err(out[:slices].sum(0).cpu(), a.double().cpu().t() @ b.double().cpu()) < FP32_TOL


@pytest.mark.parametrize("library, dtype, grad_dtype", [("cublas", torch.float32, torch.float32),
                                                        ("cublas", torch.bfloat16, torch.float32),
                                                        ("cublas", torch.bfloat16, torch.bfloat16),
                                                        ("triton", torch.float32, torch.float32),
                                                        ("triton", torch.bfloat16, torch.bfloat16)])
def test_weight_grad_matches_matmul(kernel_device, monkeypatch, library, dtype, grad_dtype):
    """gᵀ·x ``[M, N]`` through either library (issue 23's per-GEMM choice): the library's written straight into the flat gradient (no partials), ours as fp32 K-slice
    partials that the op's one reduction sums; bf16 operands accumulate in fp32 either way. The segment after it
    is summed as before."""
    monkeypatch.setattr(gemm_ops, "WEIGHT_GRAD_LIBRARY", library)
    g = torch.Generator().manual_seed(1)
    dz, x = (torch.randn(*shape, generator=g).to(kernel_device, dtype) for shape in ((130, 24), (130, 40)))
    slices = gemm_ops.weight_grad_slices(24, 40, 130, torch.device(kernel_device), dtype, dtype, grad_dtype)
    assert (slices == 0) == (library == "cublas")
    parts = Partials([(slices, 24 * 40), (3, 5)], torch.device(kernel_device), grad_dtype)
    parts.work.fill_(float("nan"))
    parts.out.fill_(float("nan"))
    parts.part(1).copy_(torch.arange(15.0).view(3, 5))
    with tf32_matmuls(False):
        gemm_ops.weight_grad(dz, x, parts, 0, (24, 40), dtype)
    flat = parts.sum().float().cpu()
    product = flat[:960].view(24, 40)
    tol = FP32_TOL if grad_dtype == torch.float32 else 1e-2
    assert rel_err(product, dz.double().cpu().t() @ x.double().cpu()) < tol
    assert torch.equal(flat[960:], torch.arange(15.0).view(3, 5).sum(0))


def test_split_k_heuristic_fills_the_gpu_only_where_tiles_are_few():
    split = gemm_ops.auto_split_k
    assert split(768, 768, 8 * 8 * 197, sms=132) == 4  # TED weight gradients: 36 output tiles -> 144 programs
    assert split(8 * 8 * 197, 768, 768, sms=132) == 1  # activations: 594 tiles already
    assert split(768, 768, 1500, sms=132) == 1  # K too short to slice
    assert split(64, 64, 1 << 20, sms=132) == 8  # capped


def _tf32(x: torch.Tensor, nearest: bool) -> torch.Tensor:
    """fp32 -> TF32 (kept as fp64): to nearest with ties away from zero (cuBLAS), or truncated (bare tensor cores)."""
    bits = x.float().cpu().view(torch.int32)
    return ((bits + 0x1000 if nearest else bits) & ~0x1FFF).view(torch.float32).double()


@pytest.mark.parametrize("K", [64, 80])  # whole K steps only; then a partial last step
def test_tf32_operands_are_rounded_to_nearest(kernel_device, K):
    """Under TF32 the fp32 operands are rounded to the nearest TF32 value, as cuBLAS does, not truncated as
    bare tensor cores do (truncation biases every product: 1.5e-3 through a TED-Adapter on an H100). The
    interpreter multiplies the rounded values exactly, so this pins the rounding on CPU too. NaN stays NaN."""
    g = torch.Generator().manual_seed(K)
    a, b = torch.randn(40, K, generator=g), torch.randn(K, 24, generator=g)
    a[0, 0] = float("nan")
    with tf32_matmuls(True):
        out = kernels.gemm(a.to(kernel_device), b.to(kernel_device)).cpu()
    assert out[0].isnan().all() and not out[1:].isnan().any()
    nearest, truncated = (_tf32(a[1:], n) @ _tf32(b, n) for n in (True, False))
    assert rel_err(out[1:], nearest) < 1e-6 < 1e-4 < rel_err(out[1:], truncated)


@cuda
def test_cuda_fp32_gemms_follow_the_tf32_setting():
    """TF32 only where PyTorch allows it for its own fp32 matmuls: the two settings round differently."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(256, 512, generator=g).cuda(), torch.randn(384, 512, generator=g).cuda()
    with tf32_matmuls(False):
        ieee = gemm_ops.gemm(x, w.t())
    with tf32_matmuls(True):
        tf32 = gemm_ops.gemm(x, w.t())
    exact = x.double() @ w.double().t()
    assert rel_err(ieee, exact) < 1e-5 < rel_err(tf32, exact) < TF32_TOL  # expected: ~4e-7 and ~3e-4
