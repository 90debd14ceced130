"""Deterministic sums of per-program partial results, for every small gradient of an op in one launch.

The backward kernels do not sum across programs with atomics. Each writes its partial results — split-K
slices of a weight gradient, a stencil program's depthwise-weight and bias sums, a GEMM tile's column
sums (bias gradients) — into a segment of one fp32 workspace. A segment is ``[S, N]``: ``S`` partial
rows of ``N`` values. :func:`sum_partials` then adds each segment's ``S`` rows in a fixed order and
writes the ``N`` sums, in the parameters' dtype, into one flat gradient buffer whose pieces are views
(:meth:`Partials.split`): one launch, and every gradient written once. A segment with ``S = 0`` has no
partials: its producer (a library GEMM that sums K itself) writes its ``N`` values straight into the flat
buffer (:meth:`Partials.output`), and the launch skips it. A segment may also sum rows of another's partials
instead of its own, ``(S, N, (i, first))``: rows ``first … first + S`` of segment ``i`` (the same ``N``) — a
bias's sum over the rows that are not CLS beside the sum over all rows, from one ``[tokens, N]`` write.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

from .. import runtime
from ..runtime import launch

TILE = 4096  # fp32 values a program loads at once, [ROWS, BLOCK]: 32 registers a thread at 4 warps


@triton.jit
def _sum_partials_kernel(work_ptr, out_ptr, plan_ptr, BLOCK: tl.constexpr, ROWS: tl.constexpr):
    """One program per ``BLOCK`` outputs of one segment; its plan row is
    ``(first partial, partial stride, S, first output, outputs)``: out[i] = Σ_s work[first + s·stride + i].
    Rows are read as ``[ROWS, BLOCK]`` tiles (independent loads in flight, not one dependent load a row:
    measured on an H100, a 197-row segment summed a row at a time took ~100 µs), accumulated per row slot
    and reduced once at the end: a fixed order, bit-identical on every run."""
    plan = plan_ptr + tl.program_id(0) * 5
    src = tl.load(plan)
    stride = tl.load(plan + 1)
    count = tl.load(plan + 2)
    dst = tl.load(plan + 3)
    n = tl.load(plan + 4)
    cols = tl.arange(0, BLOCK)
    rows = tl.arange(0, ROWS)
    col_mask = cols[None, :] < n
    acc = tl.zeros((ROWS, BLOCK), dtype=tl.float32)
    for s in range(0, count, ROWS):
        r = s + rows[:, None]  # [ROWS, 1]
        acc += tl.load(work_ptr + src + r * stride + cols[None, :], mask=(r < count) & col_mask, other=0.0)
    total = tl.sum(acc, axis=0)  # [BLOCK]
    tl.store(out_ptr + dst + cols, total.to(out_ptr.dtype.element_ty), mask=cols < n)


@functools.lru_cache(maxsize=256)
def _tile(segments: tuple[tuple, ...]) -> tuple[int, int]:
    """``(ROWS, BLOCK)`` of one launch's ``[ROWS, BLOCK]`` tiles: ROWS partial rows loaded together (a program
    waits for memory ``ceil(S / ROWS)`` times, not ``S`` times), as many as the shortest summed segment fills
    (16 to 128), and ``BLOCK = TILE // ROWS`` outputs a program. Long sums (a stencil's ~100 program rows, a
    GEMM's ~200 tile rows of column sums) then take few waits in many programs, and split-K's 2-8 slices do not
    issue masked rows (a 16-row tile summed 99 rows in 7 waits, in 31 programs at ViT-B/16)."""
    shortest = min((seg[0] for seg in segments if seg[0]), default=1)
    rows = min(128, max(16, triton.next_power_of_2(shortest)))
    return rows, TILE // rows


Segment = tuple  # (S, N) or (S, N, (segment, first row)): see the module docstring


@functools.lru_cache(maxsize=256)
def _layout(segments: tuple[Segment, ...]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """Workspace offsets, output offsets and the per-program plan rows of ``segments``."""
    work, out, rows = [0], [0], []
    block = _tile(segments)[1]
    for s, n, *alias in segments:
        first = work[-1]  # its own rows, or (an alias) rows of an earlier segment's
        if alias:
            (source, row), = alias
            if source >= len(work) - 1 or len(segments[source]) != 2 or segments[source][1] != n or \
                    row + s > segments[source][0]:
                raise ValueError(f"Partials: segment {len(work) - 1} sums rows {row}..{row + s} of segment {source}, "
                                 f"which must be an earlier segment of its own rows, as many, and N = {n}")
            first = work[source] + row * n
        for start in range(0, n if s else 0, block):  # S = 0: written directly, nothing to sum
            rows.append((first + start, n, s, out[-1] + start, min(block, n - start)))
        work.append(work[-1] + (0 if alias else s * n))
        out.append(out[-1] + n)
    rows.sort(key=lambda row: -row[2])  # the longest sums start first, not last (the GPU runs programs in order)
    return tuple(work), tuple(out), tuple(rows)


@functools.lru_cache(maxsize=256)
def _device_plan(segments: tuple[tuple, ...], device: torch.device) -> torch.Tensor:
    """The plan as an int64 device tensor, made once per shape and device (no copy at later calls, so a
    warmed-up backward can be captured in a CUDA graph). On a GPU it is made on a stream of its own: a CUDA
    graph's memory pool takes the allocations of the stream being warmed up or captured (torch.compile's
    cudagraph trees warm up inside their pool), and a cached plan in that pool is a live tensor the graph does
    not own (2026-12-04, H200: "5 tensors in the cudagraph pool not tracked as outputs")."""
    rows = _layout(segments)[2]
    on_gpu = device.type == "cuda" and runtime.capturing is None and torch.cuda.is_available()
    if not on_gpu or torch.cuda.is_current_stream_capturing():
        return torch.tensor(rows, dtype=torch.int64, device=device)
    own = torch.cuda.Stream(device)
    with torch.cuda.stream(own):
        plan = torch.tensor(rows, dtype=torch.int64, device=device)
    own.synchronize()  # once per shape: the plan is on the device before any stream reads it
    return plan


class Partials:
    """One fp32 workspace holding ``segments`` ((S, N) pairs, or aliases of earlier segments' rows) and the flat
    ``[Σ N]`` result in ``dtype``; ``part(i)`` is segment ``i``'s partials as ``[S, N]`` (not for an alias: its
    rows are written through the segment it reads), ``output(i)`` its ``[N]`` results."""

    def __init__(self, segments: Sequence[Segment], device: torch.device, dtype: torch.dtype) -> None:
        self.segments = tuple((int(s), int(n), *alias) for s, n, *alias in segments)
        self.device = device
        self.work_offsets, self.out_offsets, _ = _layout(self.segments)
        self.work = torch.empty(self.work_offsets[-1], device=device, dtype=torch.float32)
        self.out = torch.empty(self.out_offsets[-1], device=device, dtype=dtype)

    def part(self, i: int) -> torch.Tensor:
        s, n = self.segments[i][:2]
        return self.work.as_strided((s, n), (n, 1), self.work_offsets[i])  # one view op (host time)

    def output(self, i: int) -> torch.Tensor:
        """Segment ``i``'s ``[N]`` results in the flat buffer (what an ``S = 0`` segment's producer writes)."""
        return self.out[self.out_offsets[i]:self.out_offsets[i + 1]]

    def sum(self) -> torch.Tensor:
        """Every segment with partials summed over its ``S`` rows into the flat ``[Σ N]`` buffer, which it
        returns (the ``S = 0`` segments as their producers wrote them). One launch."""
        plan = _device_plan(self.segments, self.device)
        if plan.numel():
            rows, block = _tile(self.segments)
            launch(_sum_partials_kernel, (plan.shape[0],), self.work, self.out, plan, BLOCK=block, ROWS=rows,
                   name="sum_partials", num_warps=4)
        return self.out

    @staticmethod
    def split(flat: torch.Tensor, shapes: Sequence[Sequence[int]],
              strides: Sequence[Optional[Sequence[int]]] = ()) -> list[torch.Tensor]:
        """Views of ``flat`` (from :meth:`sum`) with the given shapes, consecutive from offset 0: contiguous,
        or with ``strides[i]`` where given (a piece written in its parameter's own dense layout)."""
        views = []
        for i, piece in enumerate(flat.split([math.prod(shape) for shape in shapes])):  # one call for all pieces
            given = strides[i] if i < len(strides) else None
            if given is not None:
                views.append(piece.as_strided(tuple(shapes[i]), given))
            else:
                views.append(piece if len(shapes[i]) == 1 else piece.view(tuple(shapes[i])))
        return views
