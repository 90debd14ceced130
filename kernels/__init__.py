"""Fused Triton kernels (forward and backward) for M2-CLIP's adapters and the frozen towers' QuickGELU and
LayerNorm, as autograd-aware ops: an ``autograd.Function`` per op that launches the kernels directly, running the
same code inside ``torch.library`` custom ops under ``torch.compile`` (``fullgraph=True`` sees no graph break).

CUDA tensors run compiled kernels. CPU tensors run the same kernels through Triton's interpreter, which
must be switched on (``TRITON_INTERPRET=1``) before this package is imported — importing it decorates the
kernels, and Triton reads the variable then. Anywhere else the ops run the eager reference
(:mod:`kernels.reference`) and say so once (a warning). ``launch_counts`` counts the launches per kernel.
"""
from .primitives.gemm import gemm
from .ops.layer_norm import add_layer_norm
from .ops.quick_gelu import quick_gelu
from .ops.ted_adapter import ted_adapter, temporal_adapter
from .ops.text_adapter import text_adapter
from .reference import BranchWeights
from .runtime import INTERPRET, launch_counts

__all__ = ["BranchWeights", "add_layer_norm", "INTERPRET", "gemm", "launch_counts", "quick_gelu", "temporal_adapter", "ted_adapter",
           "text_adapter"]
