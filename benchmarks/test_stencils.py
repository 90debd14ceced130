"""The TED-Adapter's stencils in launch variants (issue 23), each timed alone at ViT-B/16, B=8, T=8, bf16
activations and fp32 parameters (the adapters' master weights, as a training step passes them), replayed from
CUDA graphs: rows ``suite="stencils"`` of the card's JSON.

The H200 measured the [16, 64]-tile stencils at 21.4 and 84.9 µs (bf16 parameters) where the static model
predicted 23.4 and 61.8 (docs/DESIGN.md §4): latency-bound, their frame walks several dependent memory rounds a
frame. Compiled for sm_90 with Triton 3.8 (``benchmarks/static``), predicted for the H100 by the model that counts
those rounds, fp32 parameters:

| kernel | tile, warps, register cap | registers | spilled bytes | programs an SM | rounds a TD frame | predicted µs |
|---|---|---|---|---|---|---|
| stencil_bwd | [16, 32], 8, 128 (today) | 107 | 0 | 2 | 1 | 43.1 |
| stencil_bwd | [16, 32], 8, 80 | 80 | 24 | 3 | 1 | 29.1 |
| stencil_bwd | [16, 64], 8, 128 (the H200's tile) | 128 | 40 | 2 | 2 | 36.9 |
| stencil_bwd | [16, 64], 16, 128 | 107 | 0 | 1 | 1 | 43.1 |
| stencil_bwd | [16, 32], 4, 168 | 154 | 0 | 3 | 1 | 37.3 |
| stencil_fwd | [16, 32], 4, 128 (today) | 96 | 0 | 5 | 1 | 19.7 |
| stencil_fwd | [16, 64], 8, 80 (before) | 80 | 0 | 3 | 2 | 23.4 |

The 168-register variant is over the 128-register budget (docs/DESIGN.md §2.3); the 80-register one and the H200's
[16, 64] tile spill (the backward now keeps its nine taps in registers for the walk: with them the [16, 64] tile no
longer fits 128 registers; the H200 ran it reloading the taps every frame, seven rounds a frame and 99.3 µs
predicted with fp32 parameters, four and 61.8 with bf16). The model charges spills nothing; the measurement decides ``kernels.primitives.stencil``'s tiles."""
from __future__ import annotations

from typing import Callable, NamedTuple
from unittest import mock

import pytest
import torch

from .harness import HAS_CUDA, NO_CUDA_REASON, VIT_B16, graph_time_ms

pytestmark = pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA_REASON)
B, T = 8, 8
# name -> (kernel, channels a tile, warps, register cap)
VARIANTS = {
    "bwd [16, 32], 8 warps, 128 registers": ("stencil_bwd", 32, 8, 128),
    "bwd [16, 32], 8 warps, 80 registers": ("stencil_bwd", 32, 8, 80),
    "bwd [16, 64], 8 warps, 128 registers": ("stencil_bwd", 64, 8, 128),
    "bwd [16, 64], 16 warps, 128 registers": ("stencil_bwd", 64, 16, 128),
    "bwd [16, 32], 4 warps, 168 registers": ("stencil_bwd", 32, 4, 168),
    "fwd [16, 32], 4 warps, 128 registers": ("stencil_fwd", 32, 4, 128),
    "fwd [16, 64], 8 warps, 80 registers": ("stencil_fwd", 64, 8, 80),
}
# the module constants each kernel's launch reads: channels a tile, warps, register cap
SETTINGS = {"stencil_bwd": ("BWD_BLOCK_C", "BWD_WARPS", "BWD_MAX_REGISTERS"),
            "stencil_fwd": ("MAX_BLOCK_C", "FWD_WARPS", "FWD_MAX_REGISTERS")}


class StencilCase(NamedTuple):
    backward: Callable[[], torch.Tensor]  # the backward launch -> dz [R, 2ca]
    forward: Callable[[], torch.Tensor]  # the forward launch -> h [R, 2ca]
    z: torch.Tensor  # [R, 2ca]: the TE part's ca channels, then the TD part's
    dh: torch.Tensor  # [R, 2ca], the same
    te: tuple  # the TE part (kernels.primitives.stencil.StencilPart): in-bias [ca], weight [ca, 1, 3], bias [ca]


def stencil_case(batch: int, frames: int, grid: tuple[int, int], ca: int, device: str,
                 dtype: torch.dtype = torch.bfloat16) -> StencilCase:
    """The TED-Adapter's stencil launches as the op makes them (both parts, ``ca`` channels each), on activations of
    ``dtype`` and fp32 parameters."""
    from kernels.packing import tap_major
    from kernels.primitives.stencil import (TD_TAPS, TE_TAPS, StencilPart, partial_width, stencil_backward,
                                            stencil_forward, stencil_programs)

    tokens = 1 + grid[0] * grid[1]
    rows = batch * frames * tokens
    z, dh = (torch.randn(rows, 2 * ca, device=device, dtype=dtype) for _ in range(2))

    def part(kernel: tuple[int, ...]) -> StencilPart:  # depthwise weight tap-major, as ConvBottleneck stores it
        return StencilPart(torch.randn(ca, device=device), tap_major(torch.randn(ca, 1, *kernel, device=device)),
                           torch.randn(ca, device=device))

    te, td = part((3,)), part((3, 3))
    programs = stencil_programs(rows // frames)
    te_part = torch.empty(programs, partial_width(ca, TE_TAPS), device=device)
    td_part = torch.empty(programs, partial_width(ca, TD_TAPS), device=device)
    return StencilCase(lambda: stencil_backward(dh, z, frames, tokens, grid, ca, te, td, te_part, td_part),
                       lambda: stencil_forward(z, frames, tokens, grid, ca, te, td), z, dh, te)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stencil_variant(benchmark, record, variant):
    from kernels.primitives import stencil

    kernel, *settings = VARIANTS[variant]
    case = stencil_case(B, T, (14, 14), VIT_B16.Ca, "cuda")
    run = case.backward if kernel == "stencil_bwd" else case.forward
    with mock.patch.multiple(stencil, **dict(zip(SETTINGS[kernel], settings))):
        run()  # compiled outside the timing
        median_ms = graph_time_ms(run)
        row = dict(suite="stencils", op="ted_adapter", width=VIT_B16.name, B=B, T=T, dtype="bf16",
                   kernel=kernel, provider=variant, median_ms=median_ms)
        benchmark.group = "stencil variants"
        benchmark.extra_info.update(row)
        benchmark.pedantic(lambda: (run(), torch.cuda.synchronize()), rounds=5, warmup_rounds=1)
    record(row)
