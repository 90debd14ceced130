"""Every fused op, in one namespace (imported on first use by the model, so that importing
``m2clip_fast`` does not decorate any Triton kernel)."""
import sys

from .gemm import gemm
from .linear import linear
from .stencil import spatial_conv, temporal_conv, temporal_difference
from .ted_adapter import ted_adapter, temporal_adapter
from .text_adapter import text_adapter

__all__ = ["gemm", "linear", "spatial_conv", "temporal_adapter", "temporal_conv", "temporal_difference",
           "ted_adapter", "text_adapter"]

# Importing the submodules above bound ``kernels.gemm``, ``kernels.ted_adapter``, ... to the modules;
# the package's public names are these functions.
sys.modules[__package__].__dict__.update({name: globals()[name] for name in __all__})
