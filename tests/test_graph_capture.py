"""A training step with fused adapters must be capturable in a CUDA graph: after one warm-up call, a
forward+backward makes no host synchronisation and copies nothing from the host (the reduction plan and
every launch setting are made once per shape). Checked op by op wherever the kernels run; the capture
itself, and its replay against an uncaptured run, on a GPU."""
import pytest
import torch

from kernels.ops import ted_adapter as ted_ops
from kernels.primitives import gemm as gemm_ops
from kernels.runtime import capture_launches
from m2clip_fast.adapters import TEDAdapter, TextAdapter

from .conftest import RecordOps, randomize_adapters

HOST_BOUND = {"_local_scalar_dense", "item", "nonzero", "lift_fresh", "_to_copy", "copy_", "tolist"}


def _adapters(device):
    torch.manual_seed(0)
    ted, text = TEDAdapter(16, 8, backend="fused").to(device), TextAdapter(16, 8, backend="fused").to(device)
    randomize_adapters(ted, scale=0.2)
    return ted, text


def _step(ted, text, x, y):
    (ted(x, 2, (2, 2)).square().sum() + text(y).square().sum()).backward()


def test_warm_fused_step_neither_syncs_nor_copies_from_the_host(kernel_device):
    """The host side of a step, op by op (launches captured, not run: the interpreter's own tensor copies
    are not the op's)."""
    ted, text = _adapters(kernel_device)
    x = torch.randn(4, 5, 16, device=kernel_device, requires_grad=True)
    y = torch.randn(3, 5, 16, device=kernel_device, requires_grad=True)
    params = [*ted.parameters(), *text.parameters(), x, y]
    _step(ted, text, x, y)  # warm-up: plans and launch settings for these shapes are made here
    launches = []
    with capture_launches(lambda name, *args: launches.append(name)):
        for p in params:
            p.grad = None  # as optimizer.zero_grad() leaves them
        with RecordOps() as ops:
            _step(ted, text, x, y)
    weight_grads = 2 * (gemm_ops.WEIGHT_GRAD_LIBRARY == "triton")  # the weight gradients may go to the library,
    ted = 4 * (ted_ops.GEMM_LIBRARY == "triton") + weight_grads  # and the TED-Adapter's other four
    assert sorted(launches) == sorted(["gemm"] * ted + ["stencil_fwd", "stencil_bwd", "sum_partials"]
                                      + ["gemm"] * (4 + weight_grads) + ["sum_partials"])  # TED and text adapters
    assert not HOST_BOUND & set(ops.names), sorted(HOST_BOUND & set(ops.names))


@pytest.mark.cuda
def test_cuda_graph_capture_and_replay_of_a_fused_step():
    ted, text = _adapters("cuda")
    x = torch.randn(4, 5, 16, device="cuda", requires_grad=True)
    y = torch.randn(3, 5, 16, device="cuda", requires_grad=True)
    params = [*ted.parameters(), *text.parameters(), x, y]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up on a side stream, as capture requires
        for _ in range(2):
            _step(ted, text, x, y)
    torch.cuda.current_stream().wait_stream(stream)
    expected = [p.grad.clone() / 2 for p in params]  # two warm-up steps accumulated
    for p in params:
        p.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        _step(ted, text, x, y)
    for p in params:
        p.grad.zero_()
    graph.replay()
    torch.cuda.synchronize()
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-6)
