"""Fused Triton kernels (forward and backward) for M2-CLIP's adapters, as autograd-aware ops: an
``autograd.Function`` per op that launches the kernels directly, running the same code inside
``torch.library`` custom ops under ``torch.compile`` (``fullgraph=True`` sees no graph break).

CUDA tensors run compiled kernels. CPU tensors run the same kernels through Triton's interpreter when
``TRITON_INTERPRET=1`` was set before the first fused op was imported, and otherwise the eager
reference (:mod:`kernels.reference`) with a one-time warning. Attributes load lazily: importing
``kernels`` (or ``kernels.reference``) decorates no Triton kernel.
"""
import importlib

from .reference import BranchWeights

_LAZY = {name: "ops" for name in ("gemm", "linear", "spatial_conv", "temporal_adapter", "temporal_conv",
                                  "temporal_difference", "ted_adapter", "text_adapter")}
_LAZY.update(INTERPRET="utils", launch_counts="utils")
__all__ = ["BranchWeights", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'kernels' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
