"""kernels/primitives/stencil.py through the op that launches it: each part alone (a TE-only and a TD-only TED-Adapter
run the temporal conv, and the temporal difference with the 3×3 conv), finite differences, both depthwise weight
layouts. Values and gradients of the whole op are in test_ted_adapter.py."""
import pytest
import torch

import kernels
from kernels import BranchWeights

from .parity import FP32_TOL, branch, rel_err
from kernels.packing import tap_major

T, GRID, C, CA = 2, (2, 3), 5, 3  # tiny: gradcheck differentiates every input element


def _one_branch(part: str):
    """``x, *weights -> ted_adapter`` with only the ``part`` branch."""
    def call(x, *p):
        weights = BranchWeights(*p)
        return kernels.ted_adapter(x, T, GRID, weights if part == "te" else None, weights if part == "td" else None)
    return call


@pytest.mark.filterwarnings("ignore:Input #")  # gradcheck prefers fp64 inputs; see the docstring
@pytest.mark.parametrize("part", ["te", "td"])
def test_gradcheck_of_each_stencil_part(kernel_device, part):
    """The adapter is linear in x and in each weight alone, so fp32 finite differences are exact up to rounding
    (the kernels accumulate in fp32, so an fp64 gradcheck would test nothing more)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * T, 1 + GRID[0] * GRID[1], C, generator=g).to(kernel_device).requires_grad_()
    weights = [w.requires_grad_() for w in branch(C, CA, (3,) if part == "te" else (3, 3), g, kernel_device)]
    opts = dict(eps=1e-2, atol=2e-3, rtol=2e-3, fast_mode=True)
    call = _one_branch(part)
    assert torch.autograd.gradcheck(lambda x: call(x, *weights), (x,), **opts)
    conv = weights[2]
    assert torch.autograd.gradcheck(lambda w: call(x, *weights[:2], w, *weights[3:]), (conv,), **opts)


@pytest.mark.parametrize("part", ["te", "td"])
def test_tap_major_depthwise_weights_give_the_same_values_and_gradients(kernel_device, part):
    """The layout ``ConvBottleneck`` stores (each tap's channels contiguous) is read in place; its gradient
    comes back in the same layout (so autograd accumulates it without a copy)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3 * T, 1 + GRID[0] * GRID[1], 20, generator=g).to(kernel_device)
    weights = branch(20, 20, (3,) if part == "te" else (3, 3), g, kernel_device)
    results = []
    for layout in (lambda w: w, tap_major):
        leaves = [w.detach().clone() for w in weights]
        leaves[2] = layout(leaves[2])
        leaves = [w.requires_grad_() for w in leaves]
        out = _one_branch(part)(x, *leaves)
        out.square().sum().backward()
        assert leaves[2].grad.stride() == leaves[2].stride()
        results.append((out.detach(), leaves[2].grad))
    assert rel_err(results[1][0].cpu(), results[0][0].cpu()) < FP32_TOL
    assert rel_err(results[1][1].cpu(), results[0][1].cpu()) < FP32_TOL


@pytest.mark.parametrize("parts", ["both", "te", "td"])
def test_stencil_writes_the_augmented_k_columns(kernel_device, parts):
    """Past the channels, h holds the output GEMM's augmented K (kernels.packing.AUX_COLUMNS): 1 for the TE
    part's bias, the patch gate [l ≠ 0] for the TD part's, zeros after — on every row of every frame, and the
    channels are what they are without the extra columns."""
    from kernels.packing import AUX_COLUMNS
    from kernels.primitives.stencil import StencilPart, stencil_forward

    g = torch.Generator().manual_seed(7)
    c_te, c_td = (3 if parts != "td" else 0), (4 if parts != "te" else 0)
    L, frames = 1 + GRID[0] * GRID[1], 3
    z = torch.randn(2 * frames * L, c_te + c_td, generator=g).to(kernel_device)

    def part(c, taps):
        return StencilPart(*(torch.randn(*s, generator=g).to(kernel_device) for s in ((c,), (c, 1, *taps), (c,))))

    te = part(c_te, (3,)) if c_te else StencilPart(None, None)
    td = part(c_td, (3, 3)) if c_td else StencilPart(None, None)
    h = stencil_forward(z, frames, L, GRID, c_te, te, td, AUX_COLUMNS)
    assert h.shape == (z.shape[0], c_te + c_td + AUX_COLUMNS)
    torch.testing.assert_close(h[:, :c_te + c_td], stencil_forward(z, frames, L, GRID, c_te, te, td))
    gate = (torch.arange(z.shape[0], device=kernel_device) % L != 0).to(h.dtype)
    want = torch.zeros(z.shape[0], AUX_COLUMNS, device=kernel_device)
    columns = ([torch.ones_like(gate)] if c_te else []) + ([gate] if c_td else [])
    want[:, :len(columns)] = torch.stack(columns, dim=1)
    assert torch.equal(h[:, c_te + c_td:], want)
    with pytest.raises(ValueError, match="aux_columns must be 0, or 1 to 16"):
        stencil_forward(z, frames, L, GRID, c_te, te, td, 17)
