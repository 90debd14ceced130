"""Shared by the per-op kernel tests: tolerances (docs/DESIGN.md §3), an fp64 reference comparison that also
proves Triton kernels ran, random adapter branches, and PyTorch's fp32 matmul setting."""
import contextlib

import pytest
import torch

import kernels
from benchmarks.harness import rel_err  # noqa: F401 (the shared error measure, re-exported for the tests)
from kernels import BranchWeights

FP32_TOL = 1e-5  # docs/DESIGN.md §3: fp32 with IEEE multiplies (the interpreter; the GPU under PyTorch's default)
TF32_TOL = 1e-3  # docs/DESIGN.md §3: fp32 on a GPU with TF32 matmuls allowed
cuda = pytest.mark.cuda  # skipped without a CUDA device (tests/conftest.py)


def branch(width: int, ca: int, kernel: tuple, gen: torch.Generator, device="cpu", dtype=torch.float32):
    rand = lambda *s, scale=1.0: (torch.randn(*s, generator=gen) * scale).to(device, dtype)  # noqa: E731
    return BranchWeights(rand(ca, width, scale=0.2), rand(ca), rand(ca, 1, *kernel), rand(ca),
                         rand(width, ca, scale=0.2), rand(width))


def assert_matches_reference(fused_fn, ref_fn, inputs, tol=FP32_TOL, reference_on="cpu"):
    """Forward value and the gradient of every tensor input, fused (as given) vs reference (fp64, on the CPU or,
    for the GPU tests at ViT-B/16 size, ``reference_on="cuda"``: a minute of CPU time each otherwise).
    Also checks that Triton kernels ran in both passes, not a fallback to the reference."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    launches = sum(kernels.launch_counts.values())
    out = fused_fn(*leaves)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
    out.backward(grad)
    assert sum(kernels.launch_counts.values()) >= launches + 2, "no Triton kernel ran"
    ref_leaves = [t.detach().to(reference_on, torch.float64).requires_grad_() for t in inputs]
    ref = ref_fn(*ref_leaves)
    ref.backward(grad.to(reference_on, torch.float64))
    assert out.dtype == inputs[0].dtype and out.shape == ref.shape
    err = rel_err(out.to(reference_on), ref)
    assert err < tol, f"value: {err:.2e}"
    for i, (a, b) in enumerate(zip(leaves, ref_leaves)):
        if b.grad.abs().max() == 0:  # e.g. W3 at T = 1: the reference gradient is exactly zero
            assert a.grad.abs().max() == 0, f"input {i}: expected an exact zero gradient"
        else:
            err = rel_err(a.grad.to(reference_on), b.grad)
            assert err < tol, f"grad of input {i}: {err:.2e}"


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
