"""Fused ops vs the eager reference (fp64): on the ``kernel_device`` (Triton's interpreter on CPU, or the GPU),
plus GPU-only tests at real widths in bf16/fp16/TF32 that skip without CUDA."""
import contextlib
import importlib
import warnings

import pytest
import torch

import kernels
from kernels import BranchWeights, reference
from kernels import utils as kutils

FP32_TOL = 1e-5  # docs/DESIGN.md §3: fp32 with IEEE multiplies (the interpreter; the GPU under PyTorch's default)
TF32_TOL = 1e-3  # docs/DESIGN.md §3: fp32 on a GPU with TF32 matmuls allowed
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    b = b.double()
    return ((a.double() - b).norm() / b.norm().clamp_min(1e-30)).item()


def branch(width: int, ca: int, kernel: tuple, gen: torch.Generator, device="cpu", dtype=torch.float32):
    rand = lambda *s, scale=1.0: (torch.randn(*s, generator=gen) * scale).to(device, dtype)  # noqa: E731
    return BranchWeights(rand(ca, width, scale=0.2), rand(ca), rand(ca, 1, *kernel), rand(ca),
                         rand(width, ca, scale=0.2), rand(width))


def assert_matches_reference(fused_fn, ref_fn, inputs, tol=FP32_TOL):
    """Forward value and the gradient of every tensor input, fused (as given) vs reference (fp64 on CPU).
    Also checks that Triton kernels ran in both passes, not a fallback to the reference."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    launches = sum(kernels.launch_counts.values())
    out = fused_fn(*leaves)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
    out.backward(grad)
    assert sum(kernels.launch_counts.values()) >= launches + 2, "no Triton kernel ran"
    ref_leaves = [t.detach().double().cpu().requires_grad_() for t in inputs]
    ref = ref_fn(*ref_leaves)
    ref.backward(grad.double().cpu())
    assert out.dtype == inputs[0].dtype and out.shape == ref.shape
    assert rel_err(out.cpu(), ref) < tol, f"value: {rel_err(out.cpu(), ref):.2e}"
    for i, (a, b) in enumerate(zip(leaves, ref_leaves)):
        if b.grad.abs().max() == 0:  # e.g. W3 at T = 1: the reference gradient is exactly zero
            assert a.grad.abs().max() == 0, f"input {i}: expected an exact zero gradient"
        else:
            assert rel_err(a.grad.cpu(), b.grad) < tol, f"grad of input {i}: {rel_err(a.grad.cpu(), b.grad):.2e}"


SHAPES = [  # (T, grid, C, Ca): T = 1, odd and non-square grids, widths off the block size
    (1, (2, 3), 24, 20),
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


@pytest.mark.parametrize("T", [1, 3, 8])
def test_temporal_adapter_matches_reference(kernel_device, T):
    g = torch.Generator().manual_seed(T)
    f = torch.randn(3 * T, 24, generator=g).to(kernel_device)
    w = branch(24, 12, (3,), g, kernel_device)

    def run(impl):
        return lambda f, *p: impl.temporal_adapter(f, T, BranchWeights(*p))

    assert_matches_reference(run(kernels), run(reference), [f, *w])


@pytest.mark.parametrize("shape, C, Ca", [((2, 5), 24, 20), ((3, 7), 40, 17)])
def test_text_adapter_matches_reference(kernel_device, shape, C, Ca):
    g = torch.Generator().manual_seed(C)
    x = torch.randn(*shape, C, generator=g)
    w = [torch.randn(Ca, C, generator=g) * 0.2, torch.randn(Ca, generator=g),
         torch.randn(C, Ca, generator=g) * 0.2, torch.randn(C, generator=g)]
    inputs = [t.to(kernel_device) for t in (x, *w)]
    assert_matches_reference(kernels.text_adapter, reference.text_adapter, inputs)


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


@pytest.mark.parametrize("activation, residual", [("none", False), ("gelu", True)])
def test_linear_with_epilogues_matches_reference(kernel_device, activation, residual):
    g = torch.Generator().manual_seed(0)
    x, w, b, r = (t.to(kernel_device) for t in (
        torch.randn(3, 11, 40, generator=g), torch.randn(36, 40, generator=g), torch.randn(36, generator=g),
        torch.randn(3, 11, 36, generator=g)))

    def ref(x, w, b, *r):
        y = torch.nn.functional.linear(x, w, b)
        y = torch.nn.functional.gelu(y) if activation == "gelu" else y
        return y + r[0] if r else y

    inputs = [x, w, b, r] if residual else [x, w, b]
    assert_matches_reference(lambda x, w, b, *r: kernels.linear(x, w, b, activation, r[0] if r else None), ref, inputs)


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
    assert {k: n for k, n in ran.items() if n} == {"gemm": 6, "stencil_fwd": 1, "stencil_bwd": 1, "sum_partials": 1}


def test_gemm_autotunes_only_tiles_that_fit_the_problem():
    import triton

    gemm = importlib.import_module("kernels.gemm")
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
    gemm = importlib.import_module("kernels.gemm").gemm
    g = torch.Generator().manual_seed(K)
    a, b = (torch.randn(*shape, generator=g).to(kernel_device) for shape in ((K, 40), (K, 24)))
    out = torch.full((split_k, 40, 24), float("nan"), device=kernel_device)
    with tf32_matmuls(False):
        gemm(a.t(), b, out=out, split_k=split_k)  # a weight gradient: aᵀ·b, as fp32 partial tiles
    slices = -(-K // importlib.import_module("kernels.gemm").k_slice(K, split_k))
    assert torch.isnan(out[slices:]).all() and not torch.isnan(out[:slices]).any()  # no empty slice was written
    assert rel_err(out[:slices].sum(0).cpu(), a.double().cpu().t() @ b.double().cpu()) < FP32_TOL


def test_split_k_heuristic_fills_the_gpu_only_where_tiles_are_few():
    split = importlib.import_module("kernels.gemm").auto_split_k
    assert split(768, 768, 8 * 8 * 197, sms=132) == 4  # TED weight gradients: 36 output tiles -> 144 programs
    assert split(8 * 8 * 197, 768, 768, sms=132) == 1  # activations: 594 tiles already
    assert split(768, 768, 1500, sms=132) == 1  # K too short to slice
    assert split(64, 64, 1 << 20, sms=132) == 8  # capped


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


def _bad_calls():
    g = torch.Generator().manual_seed(0)
    te, td = branch(16, 8, (3,), g), branch(16, 8, (3, 3), g)
    x = torch.randn(4, 5, 16)
    return [
        (lambda: kernels.ted_adapter(x[0], 2, (2, 2), te, td), r"x must be \[B\*T, L, C\]"),
        (lambda: kernels.ted_adapter(x, 3, (2, 2), te, td), "multiple of num_frames"),
        (lambda: kernels.ted_adapter(x, 2, (2, 3), te, td), "L = 5 tokens"),
        (lambda: kernels.ted_adapter(torch.randn(4, 5, 12), 2, (2, 2), te, td), r"te.fc1_weight must be \[8, 12\]"),
        (lambda: kernels.ted_adapter(x.double(), 2, (2, 2), te, td), "float32/bfloat16/float16"),
        (lambda: kernels.ted_adapter(x.bfloat16(), 2, (2, 2), te, td), "share a dtype"),
        (lambda: kernels.ted_adapter(x.to("meta"), 2, (2, 2), te, td), "one device"),
        (lambda: kernels.text_adapter(x, te.fc1_weight, te.fc1_bias, te.fc2_weight[:, :4], te.fc2_bias),
         r"fc2_weight must be \[16, 8\]"),
        (lambda: kernels.spatial_conv(x[:, 1:], (3, 2), td.conv_weight), "does not tile"),
        (lambda: kernels.temporal_conv(x, 2, td.conv_weight), r"weight must be \[16, 1, 3\]"),
        (lambda: kernels.linear(x, te.fc1_weight.t()), "agree on K"),
    ]


@pytest.mark.parametrize("index", range(11))
def test_invalid_inputs_raise_value_error(index):
    call, match = _bad_calls()[index]
    with pytest.raises(ValueError, match=match):
        call()


def test_torch_compile_fullgraph_of_a_fused_adapter(kernel_device):
    from m2clip_fast.adapters import TEDAdapter

    torch.manual_seed(0)
    adapter = TEDAdapter(16, 8, use_fused=True).to(kernel_device)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    x = torch.randn(4, 5, 16, device=kernel_device, requires_grad=True)
    compiled = torch.compile(adapter, fullgraph=True)
    out = compiled(x, 2, (2, 2))
    out.sum().backward()
    grad_compiled = x.grad.clone()
    x.grad = None
    adapter.use_fused = False
    expected = adapter(x, 2, (2, 2))
    expected.sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_compiled, x.grad, rtol=1e-5, atol=1e-5)


# --- CUDA only -------------------------------------------------------------------------------------

@contextlib.contextmanager
def tf32_matmuls(on: bool):
    """PyTorch's fp32 CUDA matmul setting (which the fused GEMMs follow), set for the duration."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


# (dtype, TF32 allowed, tolerance): docs/DESIGN.md §3. IEEE fp32 at ViT-B/16 width sums up to 3152 products per
# weight-gradient element (~1e-6 expected), so 1e-4 there: still 10× inside DESIGN's GPU fp32 bound.
GPU_PRECISIONS = [(torch.float32, False, 1e-4), (torch.float32, True, TF32_TOL),
                  (torch.bfloat16, False, 2e-2), (torch.float16, False, 5e-3)]


@cuda
@pytest.mark.parametrize("dtype, tf32, tol", GPU_PRECISIONS)
def test_cuda_ted_adapter_parity(dtype, tf32, tol):
    g = torch.Generator().manual_seed(0)
    T, grid, C, Ca = 8, (14, 14), 768, 384
    x = torch.randn(2 * T, 1 + 196, C, generator=g).cuda().to(dtype)
    te, td = branch(C, Ca, (3,), g, "cuda", dtype), branch(C, Ca, (3, 3), g, "cuda", dtype)

    def run(impl):
        return lambda x, *p: impl.ted_adapter(x, T, grid, BranchWeights(*p[:6]), BranchWeights(*p[6:]))

    with tf32_matmuls(tf32):
        assert_matches_reference(run(kernels), run(reference), [x, *te, *td], tol=tol)


@cuda
@pytest.mark.parametrize("dtype, tf32, tol", GPU_PRECISIONS)
def test_cuda_text_adapter_parity(dtype, tf32, tol):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 24, 512, generator=g).cuda().to(dtype)
    w = [t.cuda().to(dtype) for t in (torch.randn(384, 512, generator=g) * 0.05, torch.randn(384, generator=g),
                                      torch.randn(512, 384, generator=g) * 0.05, torch.randn(512, generator=g))]
    with tf32_matmuls(tf32):
        assert_matches_reference(kernels.text_adapter, reference.text_adapter, [x, *w], tol=tol)


@cuda
def test_cuda_fp32_gemms_follow_the_tf32_setting():
    """TF32 only where PyTorch allows it for its own fp32 matmuls: the two settings round differently."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(256, 512, generator=g).cuda(), torch.randn(384, 512, generator=g).cuda()
    with tf32_matmuls(False):
        ieee = kernels.linear(x, w)
    with tf32_matmuls(True):
        tf32 = kernels.linear(x, w)
    exact = x.double() @ w.double().t()
    assert rel_err(ieee, exact) < 1e-5 < rel_err(tf32, exact) < TF32_TOL  # expected: ~4e-7 and ~3e-4


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
