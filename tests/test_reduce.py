"""kernels/primitives/reduce.py: the one deterministic launch that sums every partial result of an op's backward,
against torch's sums (fp64), with segments written directly (S = 0) left as their producers wrote them."""
import pytest
import torch

from kernels import runtime
from kernels.primitives import reduce
from kernels.primitives.reduce import Partials

from .parity import FP32_TOL, rel_err


@pytest.mark.parametrize("segments", [
    [(4, 700), (0, 300), (99, 40), (1, 5)],  # split-K slices, a library's direct write, stencil rows, one row
    [(0, 64), (197, 130), (99, 300)],  # the TED backward with cuBLAS weight gradients: long sums only
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_partials_sum_every_segment_once(kernel_device, segments, dtype):
    g = torch.Generator().manual_seed(len(segments))
    parts = Partials(segments, torch.device(kernel_device), dtype)
    parts.out.fill_(float("nan"))
    expected = []
    for i, (s, n) in enumerate(segments):
        if s:
            values = torch.randn(s, n, generator=g)
            parts.part(i).copy_(values)
            expected.append(values.double().sum(0))
        else:  # what a library GEMM writes straight into the gradient
            values = torch.randn(n, generator=g)
            parts.output(i).copy_(values)
            expected.append(values.to(dtype).double())
    flat = parts.sum()
    assert flat.dtype == dtype and flat.shape == (sum(n for _, n in segments),)
    assert rel_err(flat.double().cpu(), torch.cat(expected)) < (FP32_TOL if dtype == torch.float32 else 1e-2)
    assert torch.equal(parts.sum(), flat)  # a fixed order: the same bits again


def test_tile_fits_the_shortest_sum():
    """Long sums load many rows a wait in many narrow programs; split-K's few slices keep 16-row tiles."""
    assert reduce._tile(((0, 10), (99, 1920), (197, 1536))) == (128, 32)
    assert reduce._tile(((4, 294912), (99, 1920))) == (16, 256)
    assert reduce._tile(((0, 10),)) == (16, 256)


def test_only_direct_segments_launch_nothing(kernel_device):
    parts = Partials([(0, 8)], torch.device(kernel_device), torch.float32)
    parts.output(0).fill_(3.0)
    before = runtime.launch_counts["sum_partials"]
    assert torch.equal(parts.sum(), torch.full((8,), 3.0, device=kernel_device))
    assert runtime.launch_counts["sum_partials"] == before


def test_a_segment_may_sum_rows_of_an_earlier_one(kernel_device):
    """b2 over every token row and b4 over the rows that are not CLS, from one ``[tokens, N]`` write."""
    g = torch.Generator().manual_seed(7)
    parts = Partials([(0, 3), (5, 6), (4, 6, (1, 1))], torch.device(kernel_device), torch.float32)
    assert parts.work.numel() == 5 * 6  # the alias has no rows of its own
    values = torch.randn(5, 6, generator=g)
    parts.part(1).copy_(values)
    parts.output(0).zero_()
    flat = parts.sum().cpu()
    torch.testing.assert_close(flat[3:9], values.sum(0), rtol=FP32_TOL, atol=FP32_TOL)
    torch.testing.assert_close(flat[9:], values[1:].sum(0), rtol=FP32_TOL, atol=FP32_TOL)
    with pytest.raises(ValueError, match="segment 1 sums rows 2..6 of segment 0"):
        Partials([(5, 6), (4, 6, (0, 2))], torch.device(kernel_device), torch.float32)
