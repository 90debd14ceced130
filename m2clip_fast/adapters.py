"""Adapter modules, and the frozen towers' QuickGELU. Each holds the ops it runs (:class:`AdapterOps`): the eager
reference (:data:`EAGER`, :mod:`kernels.reference`, the specification) or the fused Triton ops (:data:`FUSED`,
:mod:`kernels`). The backend is chosen when the model is built, or switched by :meth:`M2CLIP.set_backend`; both take
the same parameters, so state dicts move freely between them, and it is not part of a checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

import kernels
from kernels import reference
from kernels.packing import pack_ted_adapter, tap_major
from kernels.reference import BranchWeights


@dataclass(frozen=True)
class AdapterOps:
    """The ops the adapters and the frozen towers' QuickGELU and LayerNorms call, all from one backend."""

    name: str
    ted_adapter: Callable
    temporal_adapter: Callable
    text_adapter: Callable
    quick_gelu: Callable
    add_layer_norm: Callable


EAGER = AdapterOps("eager", reference.ted_adapter, reference.temporal_adapter, reference.text_adapter,
                   reference.quick_gelu, reference.add_layer_norm)
FUSED = AdapterOps("fused", kernels.ted_adapter, kernels.temporal_adapter, kernels.text_adapter, kernels.quick_gelu,
                   kernels.add_layer_norm)
BACKENDS = {ops.name: ops for ops in (EAGER, FUSED)}


def adapter_ops(backend: str) -> AdapterOps:
    """``"eager"`` -> :data:`EAGER`, ``"fused"`` -> :data:`FUSED`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return BACKENDS[backend]


class RunsOps:
    """Mixed into a module whose forward calls ``self.ops`` (:class:`AdapterOps`): what
    :meth:`M2CLIP.set_backend` switches."""

    ops: AdapterOps


class KeepsPacked:
    """Mixed in before ``nn.Module`` by a module whose ``_pack`` lays its parameters out for the fused ops
    (:mod:`kernels.packing`): packed again after ``.to()`` / ``.cuda()`` / ``.half()``, which give each parameter
    its own storage."""

    def _pack(self) -> None:
        raise NotImplementedError

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._pack()
        return self


class ConvBottleneck(nn.Module):
    """``fc2(dwconv(fc1(x)))``: one TED-Adapter branch, or the global temporal adapter.

    ``kind="temporal"``: depthwise conv over frames, weight ``[Ca, 1, 3]``;
    ``kind="spatial"``: depthwise 3×3 conv over the patch grid, weight ``[Ca, 1, 3, 3]``.
    The conv (weight and bias) and both linear biases start at zero, so the branch outputs zero.
    """

    def __init__(self, dim: int, width: int, kind: str) -> None:
        super().__init__()
        conv_cls = {"temporal": nn.Conv1d, "spatial": nn.Conv2d}[kind]
        self.fc1 = nn.Linear(dim, width)
        self.conv = conv_cls(width, width, kernel_size=3, padding=1, groups=width)
        self.fc2 = nn.Linear(width, dim)
        for p in (self.conv.weight, self.conv.bias, self.fc1.bias, self.fc2.bias):
            nn.init.zeros_(p)
        self.conv.weight.data = tap_major(self.conv.weight.data)  # the fused stencil reads taps as vectors

    def weights(self) -> BranchWeights:
        return BranchWeights(
            self.fc1.weight, self.fc1.bias, self.conv.weight, self.conv.bias, self.fc2.weight, self.fc2.bias
        )


class TEDAdapter(KeepsPacked, nn.Module, RunsOps):
    """Temporal Enhancement + temporal Difference adapter (docs/DESIGN.md §1.1). Identity at init.
    ``branches``: both (the method) or one of ``"te"``, ``"td"`` (ablations); an absent branch has no
    parameters.

    forward: x ``[B*T, 1 + h*w, C]`` (CLS first, frame-major) -> ``[B*T, 1 + h*w, C]``.
    """

    def __init__(self, dim: int, width: int, backend: str = "eager", branches: tuple[str, ...] = ("te", "td")) -> None:
        super().__init__()
        self.ops = adapter_ops(backend)
        self.te = ConvBottleneck(dim, width, "temporal") if "te" in branches else None
        self.td = ConvBottleneck(dim, width, "spatial") if "td" in branches else None
        self._pack()

    def _pack(self) -> None:
        """The two branches' fc1 weights back to back, and their fc2 weights and biases in the output GEMM's
        augmented operand: the fused op reads both without a copy."""
        pack_ted_adapter([b.weights() for b in (self.te, self.td) if b is not None])

    def forward(self, x: torch.Tensor, num_frames: int, grid: tuple[int, int]) -> torch.Tensor:
        te = None if self.te is None else self.te.weights()
        td = None if self.td is None else self.td.weights()
        return self.ops.ted_adapter(x, num_frames, grid, te, td)


class TemporalAdapter(KeepsPacked, ConvBottleneck, RunsOps):
    """Global temporal adapter on frame embeddings: ``f + fc2(conv_T(fc1(f)))``. Identity at init.

    forward: f ``[B*T, D]`` -> ``[B*T, D]``.
    """

    def __init__(self, dim: int, width: int, backend: str = "eager") -> None:
        super().__init__(dim, width, "temporal")
        self.ops = adapter_ops(backend)
        self._pack()

    def _pack(self) -> None:
        """fc2's weight and bias in the output GEMM's augmented operand (see :class:`TEDAdapter`)."""
        pack_ted_adapter([self.weights()])

    def forward(self, f: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.ops.temporal_adapter(f, num_frames, self.weights())


class TextAdapter(nn.Module, RunsOps):
    """``x + fc2(GELU(fc1(x)))`` (exact GELU); biases zero, weights PyTorch's default init (not an
    identity at init, as released). forward: x ``[N, S, D]`` -> ``[N, S, D]``."""

    def __init__(self, dim: int, width: int, backend: str = "eager") -> None:
        super().__init__()
        self.ops = adapter_ops(backend)
        self.fc1 = nn.Linear(dim, width)
        self.fc2 = nn.Linear(width, dim)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.text_adapter(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)


class QuickGELU(nn.Module, RunsOps):
    """``x·σ(1.702·x)`` in place of open_clip's ``QuickGELU`` (no parameters). Fused, the backward keeps only
    ``x``, not ``σ`` too: half the activation memory of the frozen MLPs (:mod:`kernels.ops.quick_gelu`).
    forward: ``[...]`` -> same shape."""

    def __init__(self, backend: str = "eager") -> None:
        super().__init__()
        self.ops = adapter_ops(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.quick_gelu(x)


class BlockAdapters(nn.Module, RunsOps):
    """The adapters of one transformer block: ``attn`` (before attention) and ``mlp`` (before the MLP),
    each present or ``None``; and the ops the block's frozen LayerNorms run (``ops.add_layer_norm``)."""

    def __init__(self, make: Callable[[], nn.Module], positions: tuple[str, ...], backend: str = "eager") -> None:
        super().__init__()
        self.ops = adapter_ops(backend)
        self.attn = make() if "attn" in positions else None
        self.mlp = make() if "mlp" in positions else None
