"""Where and how the kernels run: the backend rule (compiled on CUDA, the interpreter on CPU with
``TRITON_INTERPRET=1``, else the eager reference), launching (counted, through :mod:`kernels.launcher`),
capturing launches instead of running them, and grid arithmetic."""
from __future__ import annotations

import collections
import functools
import contextlib
import os
import warnings
from typing import Callable, Iterator, NamedTuple, Optional

import torch

from .launcher import launch_compiled

# Read once, like Triton does when it decorates the kernels of this package.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Launch counts per kernel name: lets tests prove that a fused op really ran Triton code.
launch_counts: collections.Counter = collections.Counter()
_warned: set[str] = set()

class EagerFallbackWarning(UserWarning):
    """A fused op ran its eager reference: Triton cannot run on the tensors' device (:func:`backend`)."""


def backend(device: torch.device) -> str:
    """What the fused ops run on ``device`` — the one rule: compiled Triton kernels on CUDA; the same kernels
    through Triton's interpreter on the CPU when ``TRITON_INTERPRET=1`` was set before ``kernels`` was
    imported; anywhere else the eager reference (each op warns once)."""
    device = torch.device(device)
    if device.type == "cuda" or capturing is not None:
        return "triton"
    if device.type == "cpu" and INTERPRET:
        return "triton (interpreter)"
    why = ("TRITON_INTERPRET=1 was not set before `kernels` was imported" if device.type == "cpu"
           else f"Triton kernels do not run on {device.type}")
    return f"eager reference ({why})"


def can_run_triton(x: torch.Tensor, op: str) -> bool:
    """True where the Triton kernels run on ``x``'s device (:func:`backend`); otherwise warns once per op
    that the eager reference runs instead, and why."""
    where = backend(x.device)
    if where.startswith("triton"):
        return True
    if op not in _warned:
        _warned.add(op)
        warnings.warn(f"kernels.{op}: running the {where} on {x.device}", EagerFallbackWarning, stacklevel=3)
    return False


class LaunchCapture(NamedTuple):
    """Active while :func:`capture_launches` runs: launches go to ``hook`` instead of the GPU."""

    hook: Callable
    sm_count: int


capturing: Optional[LaunchCapture] = None


@contextlib.contextmanager
def capture_launches(hook: Callable, sm_count: int = 132) -> Iterator[None]:
    """Run the ops without running any kernel: every launch calls ``hook(name, kernel, grid, args, meta)``
    instead, on any device (the static performance model traces the fused ops this way), and launch
    decisions that depend on the GPU (split-K) assume ``sm_count`` multiprocessors."""
    global capturing
    previous, capturing = capturing, LaunchCapture(hook, sm_count)
    try:
        yield
    finally:
        capturing = previous


def launch(kernel, grid, *args, name: str, **meta) -> None:
    """``kernel[grid](*args, **meta)``, counted under ``name`` (tests prove with it that Triton code ran); on a
    GPU through :func:`kernels.launcher.launch_compiled`, which skips Triton's per-call dispatch."""
    launch_counts[name] += 1
    if capturing is not None:
        capturing.hook(name, kernel, grid, args, meta)
    elif INTERPRET:
        kernel[grid](*args, **meta)
    else:
        launch_compiled(kernel, grid, args, meta)


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` in plain Python (host code: ``triton.cdiv`` costs microseconds a call)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def compilable(name: str, fake: Callable) -> Callable[[Callable], Callable]:
    """Decorator: an op's host function, written once with a ``torch.library`` schema's types (tensors,
    optional tensors, ints, bools, dtypes) and returning tensors. Called directly in eager code; while
    ``torch.compile`` traces, through the custom op ``m2clip_fast::<name>`` made from the same function, with
    ``fake`` (same arguments) giving its outputs' shapes — so graphs stay whole (``fullgraph=True``)."""
    def register(fn: Callable) -> Callable:
        op = torch.library.custom_op(f"m2clip_fast::{name}", fn, mutates_args=())
        op.register_fake(fake)

        @functools.wraps(fn)
        def call(*args):
            return (op if torch.compiler.is_compiling() else fn)(*args)
        return call
    return register
