"""The GPU op benchmarks' inputs, providers and passes, dry-run on CPU at a small width so that a
harness bug never costs GPU time (the fused provider runs under the interpreter here)."""
import pytest
import torch

from benchmarks import test_ops
from benchmarks.harness import Width

SMALL = Width("small", 32, 16, (2, 3), 24)


@pytest.mark.parametrize("provider", ["fused", "eager"])
def test_every_op_and_pass_runs(monkeypatch, provider):
    monkeypatch.setattr(test_ops, "DEVICE", "cpu")
    for op, case in test_ops._ops(SMALL, 2, 3).items():
        fn = test_ops._provider_fn(case, op, provider)
        for passes in ("fwd", "bwd", "fwdbwd") if provider == "eager" else ("fwdbwd",):  # interpreter: slow
            run = test_ops._runner(fn, lambda: case.make(torch.float32), passes, copies=2)
            run()
            run()  # the second input set
        fwd_bytes, fwd_flops, bwd_bytes, bwd_flops = case.cost(4)
        assert 0 < fwd_bytes <= bwd_bytes and 0 < fwd_flops <= bwd_flops, op
