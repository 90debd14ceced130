"""Deterministic sums of per-program partial results, for every small gradient of an op in one launch.

The backward kernels do not sum across programs with atomics. Each writes its partial results — split-K
slices of a weight gradient, a stencil program's depthwise-weight and bias sums, a GEMM tile's column
sums (bias gradients) — into a segment of one fp32 workspace. A segment is ``[S, N]``: ``S`` partial
rows of ``N`` values. :func:`sum_partials` then adds each segment's ``S`` rows in a fixed order and
writes the ``N`` sums, in the parameters' dtype, into one flat gradient buffer whose pieces are views
(:meth:`Partials.split`): one launch, and every gradient written once.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
import triton
import triton.language as tl

from ..utils import INTERPRET, launch

BLOCK = 256 if INTERPRET else 1024


@triton.jit
def _sum_partials_kernel(work_ptr, out_ptr, plan_ptr, BLOCK: tl.constexpr):
    """One program per ``BLOCK`` outputs of one segment; its plan row is
    ``(first partial, partial stride, S, first output, outputs)``: out[i] = Σ_s work[first + s·stride + i]."""
    plan = plan_ptr + tl.program_id(0) * 5
    src = tl.load(plan)
    stride = tl.load(plan + 1)
    count = tl.load(plan + 2)
    dst = tl.load(plan + 3)
    n = tl.load(plan + 4)
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(count):  # fixed order: bit-identical on every run
        acc += tl.load(work_ptr + src + s * stride + offs, mask=mask, other=0.0)
    tl.store(out_ptr + dst + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@functools.lru_cache(maxsize=256)
def _layout(segments: tuple[tuple[int, int], ...]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """Workspace offsets, output offsets and the per-program plan rows of ``segments`` ((S, N) pairs)."""
    work, out, rows = [0], [0], []
    for s, n in segments:
        for start in range(0, n, BLOCK):
            rows.append((work[-1] + start, n, s, out[-1] + start, min(BLOCK, n - start)))
        work.append(work[-1] + s * n)
        out.append(out[-1] + n)
    return tuple(work), tuple(out), tuple(rows)


@functools.lru_cache(maxsize=256)
def _device_plan(segments: tuple[tuple[int, int], ...], device: torch.device) -> torch.Tensor:
    """The plan as an int64 device tensor, made once per shape and device (no copy at later calls, so a
    warmed-up backward can be captured in a CUDA graph)."""
    return torch.tensor(_layout(segments)[2], dtype=torch.int64, device=device)


class Partials:
    """One fp32 workspace holding ``segments`` ((S, N) pairs); ``part(i)`` is segment ``i`` as ``[S, N]``."""

    def __init__(self, segments: Sequence[tuple[int, int]], device: torch.device) -> None:
        self.segments = tuple((int(s), int(n)) for s, n in segments)
        self.device = device
        self.work_offsets, self.out_offsets, _ = _layout(self.segments)
        self.work = torch.empty(self.work_offsets[-1], device=device, dtype=torch.float32)

    def part(self, i: int) -> torch.Tensor:
        s, n = self.segments[i]
        return self.work[self.work_offsets[i]:self.work_offsets[i + 1]].view(s, n)

    def sum(self, dtype: torch.dtype) -> torch.Tensor:
        """Every segment summed over its ``S`` rows, concatenated: ``[Σ N]`` in ``dtype``. One launch."""
        out = torch.empty(self.out_offsets[-1], device=self.device, dtype=dtype)
        plan = _device_plan(self.segments, self.device)
        launch(_sum_partials_kernel, (plan.shape[0],), self.work, out, plan, BLOCK=BLOCK, name="sum_partials",
               num_warps=4)
        return out

    @staticmethod
    def split(flat: torch.Tensor, shapes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Views of ``flat`` (from :meth:`sum`) with the given shapes, consecutive from offset 0."""
        pieces = flat.split([math.prod(shape) for shape in shapes])
        return [piece.view(shape) for piece, shape in zip(pieces, shapes)]
