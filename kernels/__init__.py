"""Fused Triton kernels (forward and backward) for M2-CLIP's adapters.

Set ``TRITON_INTERPRET=1`` before importing this package to run the kernels on CPU tensors.
"""
from .reference import BranchWeights
