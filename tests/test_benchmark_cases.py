"""benchmarks/cases.py: the GPU op benchmarks' inputs, providers and passes, dry-run at a small width on the ``kernel_device``
(on CPU the fused provider runs under the interpreter) so that a harness bug never costs GPU time."""
import pytest
import torch

from benchmarks import cases
from benchmarks.harness import Width

SMALL = Width("small", 32, 16, (2, 3), 24)


@pytest.mark.parametrize("provider", ["fused", "eager"])
def test_every_op_and_pass_runs(monkeypatch, kernel_device, provider):
    monkeypatch.setattr(cases, "DEVICE", kernel_device)
    for op, case in cases.op_cases(SMALL, 2, 3).items():
        fn = cases.provider_fn(case, op, provider)
        slow = provider == "fused" and kernel_device == "cpu"  # the interpreter
        for passes in ("fwdbwd",) if slow else ("fwd", "bwd", "fwdbwd"):
            run = cases.runner(fn, lambda: case.make(torch.float32), passes, copies=2)
            run()
            run()  # the second input set
        fwd_bytes, fwd_flops, bwd_bytes, bwd_flops = case.cost(4)
        assert 0 < fwd_bytes <= bwd_bytes and 0 < fwd_flops <= bwd_flops, op


def test_compile_providers_name_real_inductor_modes():
    """compile-max autotunes like max-autotune but without CUDA graphs (every provider launches alike)."""
    assert cases.COMPILE_MODES["compile"] is None
    options = torch._inductor.list_mode_options(cases.COMPILE_MODES["compile-max"])  # raises for unknown modes
    assert options.get("max_autotune") is True and not options.get("triton.cudagraphs", False)


def test_graph_providers_time_their_base_functions_and_unknown_providers_are_refused(kernel_device, monkeypatch):
    """``fused-graph`` / ``eager-graph`` give the values of ``fused`` / ``eager`` (only the timing differs), and a
    misspelt provider is refused by name instead of being timed as something else."""
    monkeypatch.setattr(cases, "DEVICE", kernel_device)
    case = cases.op_cases(SMALL, 2, 3)["text_adapter"]
    inputs = case.make(torch.float32)
    for provider in ("fused", "eager"):
        graphed = cases.provider_fn(case, "text_adapter", provider + "-graph")(*inputs)
        assert torch.equal(graphed, cases.provider_fn(case, "text_adapter", provider)(*inputs))
    with pytest.raises(ValueError, match="unknown provider 'fused-grpah'"):
        cases.provider_fn(case, "text_adapter", "fused-grpah")


@pytest.mark.parametrize("provider", ["eager", "fused", "full-finetune", "released", "fused+graph"])
def test_every_train_step_provider_trains(provider):
    """The train-step benchmark's providers run (fused under the interpreter on CPU; ``+graph`` uncaptured, as the
    trainer runs on a CPU) and move their weights; the ``torch.compile`` providers are GPU runs only (minutes of
    C++ compilation here)."""
    torch.manual_seed(0)
    step, params = cases.train_step("tiny", 2, provider, "cpu", frames=3)
    before = [p.detach().clone() for p in params]
    step()
    moved = sum(not torch.equal(a, p) for a, p in zip(before, params))
    assert moved > len(params) // 2, (moved, len(params))  # AdamW moves every weight that got a gradient


def test_an_unknown_train_step_provider_is_refused():
    with pytest.raises(ValueError, match="unknown train-step provider 'fussed'"):
        cases.train_step("tiny", 2, "fussed", "cpu")
