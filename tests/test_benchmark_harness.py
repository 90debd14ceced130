"""The GPU op benchmarks' inputs, providers and passes, dry-run at a small width on the ``kernel_device``
(on CPU the fused provider runs under the interpreter) so that a harness bug never costs GPU time."""
import pytest
import torch

from benchmarks import test_ops
from benchmarks.harness import Width

SMALL = Width("small", 32, 16, (2, 3), 24)


@pytest.mark.parametrize("provider", ["fused", "eager"])
def test_every_op_and_pass_runs(monkeypatch, kernel_device, provider):
    monkeypatch.setattr(test_ops, "DEVICE", kernel_device)
    for op, case in test_ops._ops(SMALL, 2, 3).items():
        fn = test_ops._provider_fn(case, op, provider)
        slow = provider == "fused" and kernel_device == "cpu"  # the interpreter
        for passes in ("fwdbwd",) if slow else ("fwd", "bwd", "fwdbwd"):
            run = test_ops._runner(fn, lambda: case.make(torch.float32), passes, copies=2)
            run()
            run()  # the second input set
        fwd_bytes, fwd_flops, bwd_bytes, bwd_flops = case.cost(4)
        assert 0 < fwd_bytes <= bwd_bytes and 0 < fwd_flops <= bwd_flops, op


def test_compile_providers_name_real_inductor_modes():
    """compile-max autotunes like max-autotune but without CUDA graphs (every provider launches alike)."""
    assert test_ops.COMPILE_MODES["compile"] is None
    options = torch._inductor.list_mode_options(test_ops.COMPILE_MODES["compile-max"])  # raises for unknown modes
    assert options.get("max_autotune") is True and not options.get("triton.cudagraphs", False)


def test_graph_providers_time_the_same_functions():
    """``fused-graph`` and ``eager-graph`` run exactly the ``fused`` and ``eager`` functions (only the timing
    differs: CUDA-graph replays)."""
    for op, case in test_ops._ops(SMALL, 2, 3).items():
        for provider in ("fused", "eager"):
            assert test_ops._provider_fn(case, op, provider + "-graph") is test_ops._provider_fn(case, op, provider)
    assert test_ops.GRAPH_PROVIDERS == ["fused-graph", "eager-graph"]
