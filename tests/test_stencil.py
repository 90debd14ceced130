"""kernels/ops/stencil.py as ops of their own (temporal conv, temporal difference, 3×3 spatial conv):
values and gradients against the reference, finite differences, both depthwise weight layouts."""
import pytest
import torch

import kernels
from kernels import reference

from .parity import FP32_TOL, assert_matches_reference, rel_err
from kernels.packing import tap_major


@pytest.mark.parametrize("T, grid, C", [(1, (2, 3), 20), (3, (3, 2), 33), (8, (1, 2), 16)])
def test_stencil_building_blocks_match_reference(kernel_device, T, grid, C):
    g = torch.Generator().manual_seed(C)
    x, wt, bt, ws, bs = (t.to(kernel_device) for t in (
        torch.randn(2 * T, grid[0] * grid[1], C, generator=g), torch.randn(C, 1, 3, generator=g),
        torch.randn(C, generator=g), torch.randn(C, 1, 3, 3, generator=g), torch.randn(C, generator=g)))
    assert_matches_reference(lambda *a: kernels.temporal_conv(a[0], T, *a[1:]),
                             lambda *a: reference.temporal_conv(a[0], T, *a[1:]), [x, wt, bt])
    assert_matches_reference(lambda a: kernels.temporal_difference(a, T),
                             lambda a: reference.temporal_difference(a, T), [x])
    assert_matches_reference(lambda *a: kernels.spatial_conv(a[0], grid, *a[1:]),
                             lambda *a: reference.spatial_conv(a[0], grid, *a[1:]), [x, ws, bs])


@pytest.mark.filterwarnings("ignore:Input #")  # gradcheck prefers fp64 inputs; see the docstring
def test_gradcheck_of_the_stencil_ops(kernel_device):
    """The stencil ops are linear in every input, so fp32 finite differences are exact up to rounding
    (the kernels accumulate in fp32, so an fp64 gradcheck would test nothing more)."""
    g = torch.Generator().manual_seed(0)
    x, ws, wt = (torch.randn(*shape, generator=g).to(kernel_device).requires_grad_()
                 for shape in ((4, 6, 3), (3, 1, 3, 3), (3, 1, 3)))
    opts = dict(eps=1e-2, atol=1e-3, rtol=1e-3, fast_mode=True)
    assert torch.autograd.gradcheck(lambda x, w: kernels.spatial_conv(x, (2, 3), w), (x, ws), **opts)
    assert torch.autograd.gradcheck(lambda x, w: kernels.temporal_conv(x, 2, w), (x, wt), **opts)
    assert torch.autograd.gradcheck(lambda x: kernels.temporal_difference(x, 4), (x,), **opts)


def test_tap_major_depthwise_weights_give_the_same_values_and_gradients(kernel_device):
    """The layout ``ConvBottleneck`` stores (each tap's channels contiguous) is read in place; its gradient
    comes back in the same layout (so autograd accumulates it without a copy)."""
    g = torch.Generator().manual_seed(3)
    x, ws, wt, b = (t.to(kernel_device) for t in (torch.randn(6, 6, 20, generator=g), torch.randn(20, 1, 3, 3, generator=g),
                                                   torch.randn(20, 1, 3, generator=g), torch.randn(20, generator=g)))
    for op, w in ((lambda a, w, b: kernels.spatial_conv(a, (2, 3), w, b), ws),
                  (lambda a, w, b: kernels.temporal_conv(a, 3, w, b), wt)):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        packed = tap_major(leaves[1].detach()).requires_grad_()
        op(leaves[0], leaves[1], leaves[2]).square().sum().backward()
        op(x, packed, b).square().sum().backward()
        assert packed.grad.stride() == packed.stride()
        assert rel_err(packed.grad.cpu(), leaves[1].grad.cpu()) < FP32_TOL
