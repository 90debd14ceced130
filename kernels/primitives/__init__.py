"""The kernels the ops are built from, each with its launcher: the GEMM with fused epilogues
(:mod:`~kernels.primitives.gemm`), the TED-Adapter's stencil (:mod:`~kernels.primitives.stencil`) and the
deterministic sum of per-program partial results (:mod:`~kernels.primitives.reduce`). They take tensors as the
ops lay them out and check nothing: the ops (:mod:`kernels.ops`) check their inputs."""
