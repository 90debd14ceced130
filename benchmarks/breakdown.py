"""Where a training step's time goes, by component (issue 21): a ``torch.profiler`` trace of the step, each op
charged to the part of the model that ran it — the vision tower (split on a GPU by kernel: GEMMs, attention,
our Triton adapter kernels, norms and elementwise), the text tower, the heads and losses, the optimizer — and,
on a GPU, the idle time between kernels.

Forward ops are charged to the innermost ``m2clip:<component>`` range around them (:func:`annotate` wraps the
model's ``encode_video`` / ``encode_text`` / ``forward``); a backward op to the component of the forward op
whose autograd node it runs (the profiler's sequence numbers link them); ops inside ``Optimizer.step`` to the
optimizer. Time is the ops' own device time on a GPU (their kernels), their own CPU time elsewhere.
"""
from __future__ import annotations

import contextlib
import re
import time
from collections import defaultdict
from typing import Iterable, Iterator

import torch

PREFIX = "m2clip:"
VISION, TEXT, HEADS, OPTIMIZER, OTHER = "vision tower", "text tower", "heads and losses", "optimizer", "other"
# Kernel names on a GPU, in the order they are tried (the H100's kernel names: benchmarks/results/*.json)
KERNEL_CLASSES = (
    ("Triton adapter kernels", r"^_?(gemm|stencil_fwd|stencil_bwd|sum_partials)(_kernel)?$"),
    ("attention", r"flash|fmha|attention|sdpa"),
    ("GEMMs", r"gemm|nvjet|xmma|cutlass|splitKreduce|cublas"),
    ("norms and elementwise", r"norm|elementwise|reduce|softmax|quick_gelu|Cat|copy|fill|Memset|Memcpy"),
)


def kernel_class(name: str) -> str:
    """The vision tower's kernel categories, from a kernel's name."""
    for label, pattern in KERNEL_CLASSES:
        if re.search(pattern, name):
            return label
    return "other kernels"


@contextlib.contextmanager
def annotate(model: torch.nn.Module) -> Iterator[None]:
    """Profiler ranges ``m2clip:<component>`` around ``model``'s towers and its forward, for the duration."""
    originals = {name: getattr(model, name) for name in ("encode_video", "encode_text", "forward")}
    labels = {"encode_video": VISION, "encode_text": TEXT, "forward": HEADS}

    def ranged(name):
        def call(*args, **kwargs):
            with torch.profiler.record_function(PREFIX + labels[name]):
                return originals[name](*args, **kwargs)
        return call

    for name in originals:
        setattr(model, name, ranged(name))
    try:
        yield
    finally:
        for name in originals:
            delattr(model, name)  # the instance attributes go; the class's methods show again


def _range_component(event) -> str | None:
    """The component of the innermost range around ``event``: an ``m2clip:`` range or the optimizer's step."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(PREFIX):
            return parent.name[len(PREFIX):]
        if parent.name.startswith("Optimizer.step"):
            return OPTIMIZER
        parent = parent.cpu_parent
    return None


NODE = "autograd::engine::evaluate_function"  # the autograd engine's event around one node's backward


def _backward_node(event):
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(NODE):
            return parent
        parent = parent.cpu_parent
    return None


def _component(event, forward: dict) -> str:
    """The component an event's own time goes to (see the module docstring)."""
    if event.name.startswith(PREFIX):
        return event.name[len(PREFIX):]  # time of a range itself (e.g. Triton launched outside any aten op)
    node = event if event.name.startswith(NODE) else _backward_node(event)
    return (forward.get(node.sequence_nr) if node is not None else None) or _range_component(event) or OTHER


def by_component(events: Iterable, on_gpu: bool) -> dict[str, float]:
    """Milliseconds per component (and, on a GPU, per vision-tower kernel category) from the profiler's
    ``events()``, each event's own time (its own kernels on a GPU: a kernel is listed once, under the op or
    range that launched it); ``other`` is what no range claims (the step's own bookkeeping)."""
    events = list(events)
    forward = {}  # sequence number -> component of the forward op that made the autograd node
    for e in events:
        if e.sequence_nr >= 0 and not e.name.startswith("autograd::") and not e.name.startswith(PREFIX):
            forward.setdefault(e.sequence_nr, _range_component(e))
    totals: dict[str, float] = defaultdict(float)
    for e in events:
        component = _component(e, forward)
        if not on_gpu:
            totals[component] += e.self_cpu_time_total / 1e3
            continue
        for kernel in e.kernels:
            key = f"{VISION}: {kernel_class(kernel.name)}" if component == VISION else component
            totals[key] += kernel.duration / 1e3
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def profile_step(step, model: torch.nn.Module, steps: int = 5) -> dict[str, float]:
    """Milliseconds per step by component of ``step()`` (a warmed-up training step of ``model``), with the
    idle time between kernels on a GPU."""
    on_gpu = next(model.parameters()).is_cuda
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if on_gpu else [])
    with annotate(model), torch.profiler.profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if on_gpu:
            torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - start) * 1e3 / steps
    per_step = {k: v / steps for k, v in by_component(prof.events(), on_gpu).items()}
    if on_gpu:
        per_step["idle"] = max(0.0, wall_ms - sum(per_step.values()))
    return per_step
