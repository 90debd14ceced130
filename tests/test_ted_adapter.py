"""kernels/ops/ted_adapter.py: the fused TED-Adapter and global temporal adapter against the reference —
values and every gradient, odd shapes, parameter layouts, that kernels ran, the fallback rule,
``torch.compile``, and on a GPU bf16/fp16/fp32 parity and a deterministic backward."""
import warnings

import pytest
import torch

import kernels
from kernels import BranchWeights, reference

from .parity import (FP32_TOL, GPU_PRECISIONS, TF32_TOL, assert_matches_reference, branch, cuda, rel_err,
                     tf32_matmuls)
from kernels import runtime as kutils
from kernels.ops import ted_adapter as ted_ops
from kernels.packing import pack_ted_adapter, tap_major
from kernels.primitives import gemm as gemm_ops

from .conftest import RecordOps


SHAPES = [  # (T, grid, C, Ca): T = 1, odd and non-square grids, widths off the block size; 26 clip-token
    (1, (2, 3), 24, 20),  # positions at (3, 4): the stencils' second program starts inside the second clip
    (3, (3, 4), 24, 20),
    (2, (3, 2), 40, 12),
    (3, (1, 1), 17, 33),
    (8, (2, 2), 33, 17),
]


@pytest.mark.parametrize("T, grid, C, Ca", SHAPES)
def test_ted_adapter_matches_reference(kernel_device, T, grid, C, Ca):
    g = torch.Generator().manual_seed(T)
    x = torch.randn(2 * T, 1 + grid[0] * grid[1], C, generator=g).to(kernel_device)
    te, td = branch(C, Ca, (3,), g, kernel_device), branch(C, Ca, (3, 3), g, kernel_device)

    def run(impl):
        return lambda x, *p: impl.ted_adapter(x, T, grid, BranchWeights(*p[:6]), BranchWeights(*p[6:]))

    assert_matches_reference(run(kernels), run(reference), [x, *te, *td])


@pytest.mark.parametrize("te_only", [False, True])
def test_ted_adapter_with_every_gemm_ours(kernel_device, monkeypatch, te_only):
    """Every GEMM through ours instead of the library (ted_adapter.GEMM_LIBRARY; gemm.WEIGHT_GRAD_LIBRARY: the
    weight gradients split-K)."""
    monkeypatch.setattr(gemm_ops, "WEIGHT_GRAD_LIBRARY", "triton")
    monkeypatch.setattr(ted_ops, "GEMM_LIBRARY", "triton")
    T, grid, C, Ca = 3, (3, 4), 24, 20
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2 * T, 1 + grid[0] * grid[1], C, generator=g).to(kernel_device)
    te, td = branch(C, Ca, (3,), g, kernel_device), branch(C, Ca, (3, 3), g, kernel_device)

    def run(impl):
        return lambda x, *p: impl.ted_adapter(x, T, grid, BranchWeights(*p[:6]),
                                              None if te_only else BranchWeights(*p[6:]))

    assert_matches_reference(run(kernels), run(reference), [x, *te, *([] if te_only else td)])


def test_ted_adapter_within_the_tf32_bound(kernel_device):
    """fp32 under TF32 (operands rounded to nearest: the interpreter multiplies the values a GPU does): values
    and gradients within DESIGN's 1e-3. Truncated operands gave 1.5e-3 on an H100 at ViT-B/16 width."""
    g = torch.Generator().manual_seed(0)
    T, grid, C, Ca = 4, (3, 3), 256, 128
    x = torch.randn(2 * T, 1 + 9, C, generator=g).to(kernel_device)
    te, td = branch(C, Ca, (3,), g, kernel_device), branch(C, Ca, (3, 3), g, kernel_device)

    def run(impl):
        return lambda x, *p: impl.ted_adapter(x, T, grid, BranchWeights(*p[:6]), BranchWeights(*p[6:]))

    with tf32_matmuls(True):
        assert_matches_reference(run(kernels), run(reference), [x, *te, *td], tol=TF32_TOL)


@pytest.mark.parametrize("T", [1, 3, 8])
def test_temporal_adapter_matches_reference(kernel_device, T):
    g = torch.Generator().manual_seed(T)
    f = torch.randn(3 * T, 24, generator=g).to(kernel_device)
    w = branch(24, 12, (3,), g, kernel_device)

    def run(impl):
        return lambda f, *p: impl.temporal_adapter(f, T, BranchWeights(*p))

    assert_matches_reference(run(kernels), run(reference), [f, *w])


def test_non_contiguous_input(kernel_device):
    g = torch.Generator().manual_seed(0)
    T, grid, C = 2, (2, 2), 24
    base = torch.randn(2 * T, C, 1 + 4, generator=g).to(kernel_device)
    x = base.transpose(1, 2)  # [B*T, L, C], not contiguous
    assert not x.is_contiguous()
    te, td = branch(C, 8, (3,), g, kernel_device), branch(C, 8, (3, 3), g, kernel_device)
    torch.testing.assert_close(kernels.ted_adapter(x, T, grid, te, td), reference.ted_adapter(x, T, grid, te, td),
                               rtol=1e-5, atol=1e-5)


def test_kernels_actually_ran(kernel_device):
    assert kutils.INTERPRET == (kernel_device == "cpu"), "tests/conftest.py sets TRITON_INTERPRET before kernels is imported"
    before = dict(kernels.launch_counts)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 16, generator=g).to(kernel_device).requires_grad_()
    out = kernels.ted_adapter(x, 2, (2, 2), branch(16, 8, (3,), g, kernel_device), branch(16, 8, (3, 3), g, kernel_device))
    out.sum().backward()
    ran = {k: kernels.launch_counts[k] - before.get(k, 0) for k in kernels.launch_counts}
    # One stencil launch covers TE and TD; every small gradient comes out of one sum_partials launch.
    # Every GEMM goes to the library (ted_adapter.GEMM_LIBRARY, gemm.WEIGHT_GRAD_LIBRARY) unless switched to ours.
    ours = 4 * (ted_ops.GEMM_LIBRARY == "triton") + 2 * (gemm_ops.WEIGHT_GRAD_LIBRARY == "triton")
    expected = {"gemm": ours, "stencil_fwd": 1, "stencil_bwd": 1, "sum_partials": 1}
    assert {k: n for k, n in ran.items() if n} == {k: n for k, n in expected.items() if n}


def test_cpu_without_interpreter_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(kutils, "INTERPRET", False)
    monkeypatch.setattr(kutils, "_warned", set())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 16, generator=g)
    te, td = branch(16, 8, (3,), g), branch(16, 8, (3, 3), g)
    before = kernels.launch_counts["gemm"]
    with pytest.warns(UserWarning, match="TRITON_INTERPRET=1 was not set"):
        out = kernels.ted_adapter(x, 2, (2, 2), te, td)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        kernels.ted_adapter(x, 2, (2, 2), te, td)
    assert kernels.launch_counts["gemm"] == before
    torch.testing.assert_close(out, reference.ted_adapter(x, 2, (2, 2), te, td))


def test_torch_compile_fullgraph_of_a_fused_adapter(kernel_device):
    from m2clip_fast.adapters import EAGER, TEDAdapter

    torch.manual_seed(0)
    adapter = TEDAdapter(16, 8, backend="fused").to(kernel_device)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    x = torch.randn(4, 5, 16, device=kernel_device, requires_grad=True)
    compiled = torch.compile(adapter, fullgraph=True)
    out = compiled(x, 2, (2, 2))
    out.sum().backward()
    grad_compiled = x.grad.clone()
    x.grad = None
    adapter.ops = EAGER
    expected = adapter(x, 2, (2, 2))
    expected.sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_compiled, x.grad, rtol=1e-5, atol=1e-5)


@cuda
@pytest.mark.parametrize("dtype, tf32, tol", GPU_PRECISIONS)
def test_cuda_ted_adapter_parity(dtype, tf32, tol):
    g = torch.Generator().manual_seed(0)
    T, grid, C, Ca = 8, (14, 14), 768, 384
    x = torch.randn(2 * T, 1 + 196, C, generator=g).cuda().to(dtype)
    te, td = branch(C, Ca, (3,), g, "cuda", dtype), branch(C, Ca, (3, 3), g, "cuda", dtype)

    def run(impl):
        return lambda x, *p: impl.ted_adapter(x, T, grid, BranchWeights(*p[:6]), BranchWeights(*p[6:]))

    with tf32_matmuls(tf32):  # the fp64 reference's matmuls are IEEE whatever the setting
        assert_matches_reference(run(kernels), run(reference), [x, *te, *td], tol=tol, reference_on="cuda")


@cuda
def test_cuda_backward_is_deterministic():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 197, 768, generator=g).cuda().bfloat16()
    te, td = branch(768, 384, (3,), g, "cuda", torch.bfloat16), branch(768, 384, (3, 3), g, "cuda", torch.bfloat16)

    def grads():
        leaves = [t.detach().clone().requires_grad_() for t in (x, *te, *td)]
        out = kernels.ted_adapter(leaves[0], 8, (14, 14), BranchWeights(*leaves[1:7]), BranchWeights(*leaves[7:]))
        out.square().sum().backward()
        return [t.grad for t in leaves]

    for a, b in zip(grads(), grads()):
        assert torch.equal(a, b)


def test_packed_parameters_are_read_in_place_and_give_the_same_gradients(kernel_device):
    """As TEDAdapter stores them: fc1 weights of both branches back to back, fc2 weights and biases in the output
    GEMM's augmented operand, depthwise weights tap-major. Values and every gradient match the same parameters
    stored plainly, and each gradient has its parameter's layout."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 1 + 6, 24, generator=g).to(kernel_device)
    plain = [*branch(24, 12, (3,), g, kernel_device), *branch(24, 12, (3, 3), g, kernel_device)]
    packed = [(tap_major(t) if t.dim() > 2 else t.clone()).requires_grad_() for t in plain]
    pack_ted_adapter([BranchWeights(*packed[:6]), BranchWeights(*packed[6:])])
    assert packed[4].stride() == (1, 24) and packed[11].data_ptr() == packed[4].data_ptr() + (2 * 12 + 1) * 24 * 4
    plain = [t.clone().requires_grad_() for t in plain]
    results = []
    for params in (plain, packed):
        out = kernels.ted_adapter(x, 3, (2, 3), BranchWeights(*params[:6]), BranchWeights(*params[6:]))
        out.square().sum().backward()
        results.append((out.detach(), [p.grad for p in params]))
    assert rel_err(results[1][0].cpu(), results[0][0].cpu()) < FP32_TOL
    for p, a, b in zip(packed, results[1][1], results[0][1]):
        assert a.stride() == p.stride() and rel_err(a.cpu(), b.cpu()) < FP32_TOL


def test_the_output_operand_is_the_packed_buffer_until_a_parameter_moves():
    """kernels.packing.output_operand reads [W2ᵀ; W4ᵀ; b2; b4; 0…] in place from parameters pack_ted_adapter laid
    out, casts it whole under another dtype, and assembles the same values from parameters stored any other way."""
    from kernels.packing import AUX_COLUMNS, output_operand

    g = torch.Generator().manual_seed(2)
    te, td = BranchWeights(*branch(8, 4, (3,), g)), BranchWeights(*branch(8, 4, (3, 3), g))
    fc2 = [(te.fc2_weight, te.fc2_bias), (td.fc2_weight, td.fc2_bias)]
    assembled = output_operand(fc2, torch.float32)
    want = torch.cat([te.fc2_weight.t(), td.fc2_weight.t(), te.fc2_bias[None], td.fc2_bias[None],
                      torch.zeros(AUX_COLUMNS - 2, 8)])
    assert torch.equal(assembled, want)
    pack_ted_adapter([te, td])
    packed = output_operand(fc2, torch.float32)
    assert packed.data_ptr() == te.fc2_weight.data_ptr() and torch.equal(packed, want)  # a view: no copy
    assert torch.equal(output_operand(fc2, torch.bfloat16), want.bfloat16())
    td.fc2_bias.data = td.fc2_bias.data.clone()  # no longer in the buffer: assembled again
    again = output_operand(fc2, torch.float32)
    assert again.data_ptr() != packed.data_ptr() and torch.equal(again, want)


@pytest.mark.parametrize("branches", ["te", "td"])
def test_one_branch_ablations_match_reference(kernel_device, branches):
    """TE-only and TD-only TED-Adapters (the ablations): values and every gradient."""
    g = torch.Generator().manual_seed(11)
    T, grid, C, Ca = 3, (2, 3), 24, 12
    x = torch.randn(2 * T, 1 + 6, C, generator=g).to(kernel_device)
    kernel = (3,) if branches == "te" else (3, 3)
    weights = branch(C, Ca, kernel, g, kernel_device)

    def run(impl):
        def call(x, *p):
            return impl.ted_adapter(x, T, grid, BranchWeights(*p) if branches == "te" else None,
                                    BranchWeights(*p) if branches == "td" else None)
        return call

    assert_matches_reference(run(kernels), run(reference), [x, *weights])


@pytest.mark.parametrize("branches", ["both", "te"])
def test_frozen_input_skips_the_dx_gemm(kernel_device, branches):
    """The first block's TED input comes from the frozen stem: no dx GEMM in the backward (three GEMMs: dh, dW_aug,
    dW_in), no pass over dout for b2/b4 (they come out of dW_aug), and every parameter gradient as the reference's."""
    g = torch.Generator().manual_seed(3)
    T, grid, C, Ca = 2, (2, 3), 24, 12
    x = torch.randn(2 * T, 1 + 6, C, generator=g).to(kernel_device)  # requires no grad
    params = [*branch(C, Ca, (3,), g, kernel_device), *branch(C, Ca, (3, 3), g, kernel_device)]
    dout = torch.randn(x.shape, generator=g).to(kernel_device)

    def grads(impl, leaves, x):
        td = BranchWeights(*leaves[6:]) if branches == "both" else None
        out = impl.ted_adapter(x, T, grid, BranchWeights(*leaves[:6]), td)
        gemms = kernels.launch_counts["gemm"]
        with RecordOps() as ops:
            out.backward(dout.to(out))
        return kernels.launch_counts["gemm"] - gemms, ops.names, [p.grad for p in leaves[:len(leaves) if td else 6]]

    fused = [p.detach().clone().requires_grad_() for p in params]
    ref = [p.detach().double().cpu().requires_grad_() for p in params]
    backward_gemms, ops, got = grads(kernels, fused, x)
    *_, want = grads(reference, ref, x.double().cpu())
    assert backward_gemms + ops.count("mm") == 3 and "addmm" not in ops and "sum" not in ops, (backward_gemms, ops)
    for i, (a, b) in enumerate(zip(got, want)):
        assert rel_err(a.cpu(), b) < FP32_TOL, f"grad of parameter {i}"
