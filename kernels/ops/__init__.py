"""The fused ops, one module per op: its Triton kernels, launcher and autograd wiring. Import the ops
from :mod:`kernels` (``kernels.ted_adapter``, ...); these modules hold the pieces (``kernels.ops.gemm.gemm``,
``kernels.ops.stencil.stencil_forward``, ...)."""
