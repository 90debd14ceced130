"""Tracing without running: every Triton launch captured (:func:`kernels.runtime.capture_launches`) and every aten
op that launches a device kernel recorded with the bytes it touches — on real tensors, or on fake ones
(``FakeTensorMode``: shapes and dtypes only, so a whole ViT-B/16 training step traces in seconds on a CPU)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SM_COUNT = 132  # an H100's or H200's multiprocessors: the launch decisions that depend on the GPU (split-K)

# aten ops that launch no device kernel: views, allocations, the queries fake tensors answer, and reads of a
# host scalar (AdamW's step counters live on the host)
NO_KERNEL_OPS = {
    "view", "_unsafe_view", "as_strided", "t", "transpose", "permute", "unsqueeze", "squeeze", "expand", "slice",
    "select", "detach", "alias", "split", "split_with_sizes", "unbind", "reshape", "unfold", "empty", "empty_like",
    "new_empty", "empty_strided", "new_empty_strided", "lift_fresh", "device", "sym_size", "sym_stride",
    "sym_numel", "sym_storage_offset", "_local_scalar_dense",
}


@dataclass
class Launch:
    name: str
    kernel: object
    grid: object
    args: tuple
    meta: dict


class AtenRecorder(TorchDispatchMode):
    """Records ``(name, bytes)`` of every aten op that launches a device kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _GPU_ONLY and not _tensors(args)[0].is_cuda:
            out = _shaped_like_gpu(func, args, kwargs)
        else:
            out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if name not in NO_KERNEL_OPS:
            self.ops.append((name, unique_bytes([*args, *kwargs.values(), out])))
        return out


# Overloads a GPU has and the CPU lacks (mixed-precision mm: bf16 operands, fp32 result), which the ops issue while
# their launches are captured (kernels.runtime.capture_launches records what a GPU would run).
_GPU_ONLY = {torch.ops.aten.mm.dtype, torch.ops.aten.mm.dtype_out,
             torch.ops.aten.bmm.dtype, torch.ops.aten.bmm.dtype_out}


def _shaped_like_gpu(func, args, kwargs):
    """``func``'s result on CPU tensors without computing it (a trace needs shapes, not values): run on meta
    tensors (so that outer modes, a FlopCounterMode, still see it), then its ``out`` or an empty tensor shaped so."""
    def meta(v):
        return v.to("meta") if isinstance(v, torch.Tensor) else v

    result = func(*map(meta, args), **{k: meta(v) for k, v in kwargs.items()})
    return kwargs["out"] if "out" in kwargs else torch.empty(result.shape, dtype=result.dtype)


def _tensors(values) -> list[torch.Tensor]:
    found = []
    for v in values:
        if isinstance(v, torch.Tensor):
            found.append(v)
        elif isinstance(v, (list, tuple)):
            found += _tensors(v)
    return found


def unique_bytes(values) -> int:
    """Bytes of the distinct tensors among ``values`` (each counted once, however often it is passed; a tensor
    is its storage, offset, size and dtype, so fake tensors count too)."""
    seen = {(t.untyped_storage()._cdata, t.storage_offset(), t.numel(), t.dtype): t.numel() * t.element_size()
            for t in _tensors(values) if t.numel()}
    return sum(seen.values())


def trace(fn: Callable[[], None], sm_count: int = SM_COUNT) -> tuple[list[Launch], list[tuple[str, int]]]:
    """Run ``fn`` with Triton launches captured (launch decisions for ``sm_count`` multiprocessors) and aten ops
    recorded -> (launches, [(aten op, bytes)])."""
    from kernels.runtime import capture_launches

    launches: list[Launch] = []
    recorder = AtenRecorder()
    with capture_launches(lambda name, kernel, grid, args, meta: launches.append(Launch(name, kernel, grid, args, meta)),
                          sm_count=sm_count), recorder:
        fn()
    return launches, recorder.ops
