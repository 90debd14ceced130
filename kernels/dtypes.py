"""Dtypes the kernels compute in: the autocast rule, ``tl.dot``'s operand dtype and fp32 precision."""
from __future__ import annotations

import torch
import triton.language as tl

from .runtime import INTERPRET

TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


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
