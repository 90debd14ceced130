"""Input checks shared by the ops: clear errors before any kernel is chosen."""
from __future__ import annotations

from typing import Optional

import torch

from .dtypes import TL_DTYPES, autocast_enabled


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
