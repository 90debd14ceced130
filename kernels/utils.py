"""Shared host-side helpers: where kernels can run, launch accounting, input checks, dtypes."""
from __future__ import annotations

import collections
import contextlib
import os
import warnings
from typing import Callable, Iterator, NamedTuple, Optional

import torch
import triton.language as tl

from .launcher import launch_compiled

# Read once, like Triton does when it decorates the kernels of this package.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Launch counts per kernel name: lets tests prove that a fused op really ran Triton code.
launch_counts: collections.Counter = collections.Counter()
_warned: set[str] = set()

TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


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


def autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type autocast does not know (meta)
        return False


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the eager op would compute in: the autocast dtype when autocast is on, else ``x``'s."""
    device = x.device.type
    if autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def dot_dtype(dtype: torch.dtype) -> tl.dtype:
    """Operand dtype of ``tl.dot``: the compute dtype, but fp32 under the interpreter (no bf16 there)."""
    return tl.float32 if INTERPRET else TL_DTYPES[dtype]


def fp32_dot_precision() -> str:
    """``tl.dot``'s input precision for fp32 operands, following PyTorch's setting for fp32 CUDA matmuls so
    that fused and eager round alike: ``"tf32"`` where PyTorch allows TF32 (``torch.backends.cuda.matmul
    .fp32_precision = "tf32"``, ``allow_tf32 = True`` or ``set_float32_matmul_precision("high")``), else
    ``"ieee"`` (PyTorch's default)."""
    try:  # torch >= 2.9; reads right whichever API set it (the getter behind ``matmul.fp32_precision``)
        tf32 = torch._C._get_fp32_precision_getter("cuda", "matmul") == "tf32"
    except AttributeError:
        tf32 = torch.backends.cuda.matmul.allow_tf32
    return "tf32" if tf32 else "ieee"


def check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def check_tensors(op: str, *tensors: Optional[torch.Tensor]) -> None:
    """All given tensors float (fp32/bf16/fp16), on one device, and of one dtype unless autocast is on
    (which casts them). Checked before choosing kernels or the reference, so both fail alike."""
    present = [t for t in tensors if t is not None]
    first = present[0]
    if first.dtype in TL_DTYPES and all(t.dtype == first.dtype and t.device == first.device for t in present):
        return  # the common case, checked cheaply
    devices = {t.device for t in present}
    check(len(devices) == 1, f"{op}: all tensors must be on one device, got {sorted(map(str, devices))}")
    for t in present:
        check(t.dtype in TL_DTYPES, f"{op}: expected float32/bfloat16/float16 tensors, got {t.dtype}")
    dtypes = {t.dtype for t in present}
    check(
        len(dtypes) == 1 or autocast_enabled(present[0].device.type),
        f"{op}: input and weights must share a dtype outside autocast, got {sorted(map(str, dtypes))} "
        "(cast them, or run under torch.autocast)",
    )


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` in plain Python (host code: ``triton.cdiv`` costs microseconds a call)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def as_rows(x: torch.Tensor, width: int) -> torch.Tensor:
    """``x [..., width]`` as a 2-D ``[rows, width]`` view with unit column stride (copies only if needed)."""
    x2 = x.reshape(-1, width)
    return x2 if x2.stride(1) == 1 or width == 1 else x2.contiguous()

