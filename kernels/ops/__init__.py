"""The fused ops the model calls, one module per op: its checks, autograd wiring and (for QuickGELU and the
LayerNorm, row-local ops) its own kernels; the TED-Adapter and text adapter are built on :mod:`kernels.primitives`.
Import them from :mod:`kernels` (``kernels.ted_adapter``, ...)."""
