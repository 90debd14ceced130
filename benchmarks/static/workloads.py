"""The ops at the benchmark shapes (ViT-B/16, B=8, T=8), as fwd+bwd callables of an implementation (``kernels``
or ``kernels.reference``), and the plan's HBM bytes."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch


@dataclass(frozen=True)
class Shape:
    B: int = 8
    T: int = 8
    grid: tuple = (14, 14)
    C: int = 768
    Ca: int = 384
    dtype: torch.dtype = torch.bfloat16
    tf32: bool = False  # fp32 matmuls may use TF32 (PyTorch's setting, which the fused GEMMs follow)

    @property
    def L(self) -> int:
        return 1 + self.grid[0] * self.grid[1]

    @property
    def R(self) -> int:
        return self.B * self.T * self.L


VIT_B16 = Shape()
TINY = Shape(B=1, T=2, grid=(2, 2), C=16, Ca=8, dtype=torch.float32)


@contextlib.contextmanager
def _matmul_precision(s: Shape) -> Iterator[None]:
    """PyTorch's fp32 matmuls on TF32 or not, as ``s`` says, for the duration (the fused GEMMs follow it)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = s.tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


def _ted_inputs(s: Shape):
    from kernels import BranchWeights
    from kernels.packing import pack_ted_adapter, tap_major

    def branch(kernel):  # laid out as TEDAdapter stores them: depthwise weights tap-major, fc weights packed
        return [torch.randn(s.Ca, s.C), torch.zeros(s.Ca), tap_major(torch.randn(s.Ca, 1, *kernel)), torch.zeros(s.Ca),
                torch.randn(s.C, s.Ca), torch.zeros(s.C)]

    te, td = (BranchWeights(*(t.to(s.dtype).requires_grad_() for t in branch(k))) for k in ((3,), (3, 3)))
    pack_ted_adapter([te, td])
    x = torch.randn(s.B * s.T, s.L, s.C, dtype=s.dtype, requires_grad=True)
    return x, te, td


def ted_fwd_bwd(impl, s: Shape) -> Callable[[], None]:
    """One TED-Adapter forward+backward of ``impl`` (kernels or kernels.reference) at shape ``s``."""
    x, te, td = _ted_inputs(s)
    grad = torch.randn(x.shape, dtype=s.dtype)

    def run():
        with _matmul_precision(s):
            impl.ted_adapter(x, s.T, s.grid, te, td).backward(grad)
        for t in (x, *te, *td):
            t.grad = None
    return run


def temporal_adapter_fwd_bwd(impl, s: Shape) -> Callable[[], None]:
    """The global temporal adapter on ``[B*T, D]`` frame embeddings (D = 512, bottleneck 256)."""
    from kernels import BranchWeights
    from kernels.packing import pack_ted_adapter, tap_major

    d = 512
    w = BranchWeights(*(t.to(s.dtype).requires_grad_() for t in (
        torch.randn(d // 2, d), torch.zeros(d // 2), tap_major(torch.randn(d // 2, 1, 3)), torch.zeros(d // 2),
        torch.randn(d, d // 2), torch.zeros(d))))
    pack_ted_adapter([w])  # as TemporalAdapter stores it
    f = torch.randn(s.B * s.T, d, dtype=s.dtype, requires_grad=True)
    grad = torch.randn(f.shape, dtype=s.dtype)

    def run():
        impl.temporal_adapter(f, s.T, w).backward(grad)
    return run


def quick_gelu_fwd_bwd(impl, s: Shape) -> Callable[[], None]:
    """The frozen towers' QuickGELU on one vision block's MLP hidden ``[B*T, L, 4C]``."""
    x = torch.randn(s.B * s.T, s.L, 4 * s.C, dtype=s.dtype, requires_grad=True)
    grad = torch.randn(x.shape, dtype=s.dtype)

    def run():
        impl.quick_gelu(x).backward(grad)
        x.grad = None
    return run


def add_layer_norm_fwd_bwd(impl, s: Shape) -> Callable[[], None]:
    """A frozen LayerNorm at a branch point of one vision block's stream ``[B*T, L, C]``, the previous block's
    MLP output added in, both outputs taking gradients (as ``ln_1`` in ``blocks.run_blocks``)."""
    x, r = (torch.randn(s.B * s.T, s.L, s.C, dtype=s.dtype, requires_grad=True) for _ in range(2))
    weight, bias = torch.ones(s.C, dtype=s.dtype), torch.zeros(s.C, dtype=s.dtype)
    dh, dy = (torch.randn(x.shape, dtype=s.dtype) for _ in range(2))

    def run():
        torch.autograd.backward(impl.add_layer_norm(x, weight, bias, 1e-5, r), (dh, dy))
        x.grad = r.grad = None
    return run


def text_fwd_bwd(impl, s: Shape, prompts: int = 400, tokens: int = 24, width: int = 512) -> Callable[[], None]:
    """The text adapter at its place in the K400 recipe: 400 class prompts of 24 tokens, D = 512."""
    x = torch.randn(prompts, tokens, width, dtype=s.dtype, requires_grad=True)
    w = [torch.randn(width // 2, width), torch.zeros(width // 2), torch.randn(width, width // 2), torch.zeros(width)]
    w = [t.to(s.dtype).requires_grad_() for t in w]
    grad = torch.randn(x.shape, dtype=s.dtype)

    def run():
        with _matmul_precision(s):
            impl.text_adapter(x, *w).backward(grad)
        for t in (x, *w):
            t.grad = None
    return run


def ideal_ted_bytes(s: Shape) -> int:
    """The plan: every kernel of the fused TED-Adapter (docs/DESIGN.md §2.1) reads its activations once and writes its
    outputs once; weights read, and their gradients written, once per pass.
    fwd: x→z; z→h; h,x→out.  bwd: dout→dh; dout,h→dW_aug; dh,z→dz; dz,dout→dx; dz,x→dW_in."""
    e = torch.empty(0, dtype=s.dtype).element_size()
    x, z = s.R * s.C * e, s.R * 2 * s.Ca * e  # [R, C] and [R, 2Ca] activations
    activations = (x + z) + 2 * z + (z + 2 * x) + (x + z) + (x + z) + 3 * z + (z + 2 * x) + (z + x)
    weights = 4 * s.C * s.Ca * e
    return activations + 4 * weights  # read in the forward, twice in the backward, gradients written once
