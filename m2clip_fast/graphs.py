"""Replaying a step from a CUDA graph, so that the GPU never waits on Python (docs/DESIGN.md §2.5).

A training step issues about 850 kernels (``benchmarks/results/step-trace-sm90.md``); issued one by one from
Python, the host sets the pace at small batches. :class:`GraphedCall` runs a function as it is for its first
calls with a given input signature (warm-up, on a side stream, as capture requires: lazy allocations, cuBLAS
workspaces, Triton's compilation and the launcher's plans happen there), captures it once with
``torch.cuda.graph`` and from then on copies the inputs into the graph's own tensors and replays it. A new
input signature (the short last batch of an evaluation) gets its own warm-up and its own graph.

What makes a step capturable is decided by :func:`capture_plan`, and said in one line at start-up.
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch

Signature = tuple[tuple[tuple[int, ...], torch.dtype, torch.device], ...]


class GraphedCall:
    """``fn(*inputs)`` replayed from a CUDA graph once each input signature has been run ``warmup`` times.

    ``inputs`` are CUDA tensors of fixed shapes; ``fn`` returns a tensor, or a dict / tuple of them, computed
    from the inputs and from tensors that live as long as the graph (parameters, gradients, optimizer state).
    A replayed call returns the graph's own output tensors: read them (or copy them) before the next call.
    ``fn`` runs as it is, with no graph, while ``enabled`` is false (on the CPU: the same code, uncaptured).
    """

    def __init__(self, fn: Callable, enabled: bool = True, warmup: int = 2) -> None:
        self.fn, self.enabled, self.warmup = fn, enabled, warmup
        self._runs: dict[Signature, int] = {}
        self._graphs: dict[Signature, tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], object]] = {}

    @property
    def captured(self) -> int:
        """How many graphs have been captured (one per input signature past its warm-up)."""
        return len(self._graphs)

    def __call__(self, *inputs: torch.Tensor):
        if not self.enabled:
            return self.fn(*inputs)
        key = tuple((tuple(x.shape), x.dtype, x.device) for x in inputs)
        entry = self._graphs.get(key)
        if entry is None:
            runs = self._runs.get(key, 0)
            if runs < self.warmup:
                self._runs[key] = runs + 1
                return _on_side_stream(self.fn, inputs)
            try:
                entry = self._graphs[key] = _capture(self.fn, inputs)  # captured, not run: replayed below
            except RuntimeError as err:  # an op that cannot be captured: say so once, and run as it is from now on
                warnings.warn(f"could not capture {getattr(self.fn, '__name__', 'the step')} in a CUDA graph, running "
                              f"it uncaptured from now on (--no-cuda-graphs silences this): {err}", stacklevel=2)
                self.enabled = False
                return self.fn(*inputs)
        else:
            for static, x in zip(entry[1], inputs):
                static.copy_(x, non_blocking=True)
        entry[0].replay()
        return entry[2]


def _on_side_stream(fn: Callable, inputs: tuple[torch.Tensor, ...]):
    """``fn(*inputs)`` on a side stream ordered after and before the current one (warm-up before a capture)."""
    current, side = torch.cuda.current_stream(), torch.cuda.Stream()
    side.wait_stream(current)
    with torch.cuda.stream(side):
        out = fn(*inputs)
    current.wait_stream(side)
    return out


def _capture(fn: Callable, inputs: tuple[torch.Tensor, ...]):
    """(graph, its input tensors holding ``inputs``, its outputs) of ``fn`` captured once."""
    static = tuple(x.clone() for x in inputs)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # synchronises first; the work is recorded, not run
        out = fn(*static)
    return graph, static, out


def capture_plan(device: torch.device, amp: str, distributed: bool, grad_checkpointing: bool, wanted: bool
                 ) -> tuple[bool, Optional[str]]:
    """Whether a run's steps are replayed from CUDA graphs -> (captured, the one-line reason when not)."""
    if device.type != "cuda":
        return False, "CUDA graphs need a GPU"
    if not wanted:
        return False, "--no-cuda-graphs"
    if distributed:
        return False, "multi-GPU (DDP) steps are not captured yet"
    if amp == "fp16":
        return False, "fp16's GradScaler decides on the host whether a step is skipped (bf16 is captured)"
    if grad_checkpointing:
        return False, "--grad-checkpointing stashes the RNG state on the host in every block"
    return True, None
