"""kernels/ops/text_adapter.py against the reference: values and every gradient, on CPU (interpreter) and
on a GPU in bf16/fp16/fp32."""
import pytest
import torch

import kernels
from kernels import reference
from kernels.primitives import gemm as gemm_ops

from .parity import GPU_PRECISIONS, TF32_TOL, assert_matches_reference, cuda, tf32_matmuls


@pytest.mark.parametrize("shape, C, Ca", [((2, 5), 24, 20), ((3, 7), 40, 17)])
def test_text_adapter_matches_reference(kernel_device, shape, C, Ca):
    g = torch.Generator().manual_seed(C)
    x = torch.randn(*shape, C, generator=g)
    w = [torch.randn(Ca, C, generator=g) * 0.2, torch.randn(Ca, generator=g),
         torch.randn(C, Ca, generator=g) * 0.2, torch.randn(C, generator=g)]
    inputs = [t.to(kernel_device) for t in (x, *w)]
    assert_matches_reference(kernels.text_adapter, reference.text_adapter, inputs)


def test_text_adapter_with_our_weight_gradient_gemms(kernel_device, monkeypatch):
    """The weight gradients through our split-K GEMM instead of the library (kernels.primitives.gemm)."""
    monkeypatch.setattr(gemm_ops, "WEIGHT_GRAD_LIBRARY", "triton")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 40, generator=g)
    w = [torch.randn(17, 40, generator=g) * 0.2, torch.randn(17, generator=g),
         torch.randn(40, 17, generator=g) * 0.2, torch.randn(40, generator=g)]
    assert_matches_reference(kernels.text_adapter, reference.text_adapter, [t.to(kernel_device) for t in (x, *w)])


def _inputs(prompts: int, device, dtype=torch.float32) -> list[torch.Tensor]:
    """Text-tower width (512), adapter width 384, 24 tokens a prompt."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(prompts, 24, 512, generator=g)
    w = [torch.randn(384, 512, generator=g) * 0.05, torch.randn(384, generator=g),
         torch.randn(512, 384, generator=g) * 0.05, torch.randn(512, generator=g)]
    return [t.to(device, dtype) for t in (x, *w)]


def test_text_adapter_within_the_tf32_bound(kernel_device):
    """fp32 under TF32, operands rounded to nearest as on a GPU (truncated, a gradient was 1.55e-3 on an H100)."""
    with tf32_matmuls(True):
        assert_matches_reference(kernels.text_adapter, reference.text_adapter, _inputs(4, kernel_device), tol=TF32_TOL)


@cuda
@pytest.mark.parametrize("dtype, tf32, tol", GPU_PRECISIONS)
def test_cuda_text_adapter_parity(dtype, tf32, tol):
    with tf32_matmuls(tf32):
        assert_matches_reference(kernels.text_adapter, reference.text_adapter, _inputs(64, "cuda", dtype), tol=tol)
