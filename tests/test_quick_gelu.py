"""kernels/ops/quick_gelu.py against the reference: values and gradients, sizes off the block, strided input,
that only the input is kept for the backward, ``torch.compile``, and on a GPU bf16/fp16/fp32 parity."""
import pytest
import torch

import kernels
from kernels import reference
from kernels.ops.quick_gelu import BLOCK

from .parity import FP32_TOL, assert_matches_reference, cuda, rel_err


@pytest.mark.parametrize("shape", [(3, 5), (2, BLOCK + 7), (1,)])  # one partial block; two, the last partial
def test_quick_gelu_matches_reference(kernel_device, shape):
    x = 4 * torch.randn(*shape, generator=torch.Generator().manual_seed(len(shape)))
    assert_matches_reference(kernels.quick_gelu, reference.quick_gelu, [x.to(kernel_device)])


def test_strided_input_and_gradient(kernel_device):
    x = torch.randn(6, 40, generator=torch.Generator().manual_seed(0)).to(kernel_device)
    assert_matches_reference(lambda t: kernels.quick_gelu(t.t()), lambda t: reference.quick_gelu(t.t()), [x])


def test_only_the_input_is_kept_for_the_backward(kernel_device):
    """Eager QuickGELU keeps x and σ(1.702x) (two hidden-width tensors); the fused op keeps x alone."""
    def saved_storages(fn) -> int:
        x = torch.randn(4, 64, device=kernel_device, requires_grad=True)
        storages = set()
        with torch.autograd.graph.saved_tensors_hooks(lambda t: storages.add(t.untyped_storage().data_ptr()) or t,
                                                      lambda t: t):
            fn(x * 1.0)
        return len(storages)

    assert saved_storages(reference.quick_gelu) == 2
    assert saved_storages(kernels.quick_gelu) == 1


def test_empty_input(kernel_device):
    x = torch.empty(0, 8, device=kernel_device, requires_grad=True)
    kernels.quick_gelu(x).sum().backward()
    assert x.grad.shape == x.shape


def test_torch_compile_fullgraph(kernel_device):
    x = torch.randn(3, 70, device=kernel_device, requires_grad=True)
    out = torch.compile(kernels.quick_gelu, fullgraph=True, backend="aot_eager")(x)
    out.sum().backward()
    ref = x.detach().clone().requires_grad_()
    reference.quick_gelu(ref).sum().backward()
    torch.testing.assert_close(out, reference.quick_gelu(ref), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, ref.grad, rtol=1e-5, atol=1e-5)


@cuda
@pytest.mark.parametrize("dtype, tol", [(torch.float32, FP32_TOL), (torch.bfloat16, 2e-2), (torch.float16, 5e-3)])
def test_cuda_quick_gelu_parity(dtype, tol):
    """No matmul, so fp32 is held to the IEEE bound; bf16 and fp16 to DESIGN's."""
    x = (4 * torch.randn(256, 197, 3072 // 8, generator=torch.Generator().manual_seed(0))).cuda().to(dtype)
    assert_matches_reference(kernels.quick_gelu, reference.quick_gelu, [x], tol=tol)


@cuda
def test_cuda_bf16_is_at_least_as_accurate_as_eager():
    """fp32 arithmetic inside: closer to the fp64 answer than eager bf16, which rounds between its three ops."""
    x = torch.randn(1 << 20, generator=torch.Generator().manual_seed(0)).cuda()
    exact = reference.quick_gelu(x.double())
    fused, eager = kernels.quick_gelu(x.bfloat16()), reference.quick_gelu(x.bfloat16())
    assert rel_err(fused, exact) <= rel_err(eager, exact)
