"""Fused Triton kernels (forward and backward) for M2-CLIP's adapters, as autograd-aware
``torch.library`` custom ops (``torch.compile(fullgraph=True)`` sees no graph break).

CUDA tensors run compiled kernels. CPU tensors run the same kernels through Triton's interpreter when
``TRITON_INTERPRET=1`` was set before this package was imported, and otherwise the eager reference
(:mod:`kernels.reference`) with a one-time warning.
"""
from .gemm import gemm, linear
from .reference import BranchWeights
from .stencil import spatial_conv, temporal_conv, temporal_difference
from .ted_adapter import ted_adapter, temporal_adapter
from .text_adapter import text_adapter
from .utils import INTERPRET, launch_counts

__all__ = [
    "BranchWeights", "INTERPRET", "gemm", "launch_counts", "linear", "spatial_conv", "temporal_adapter",
    "temporal_conv", "temporal_difference", "ted_adapter", "text_adapter",
]
