"""benchmarks/cases.py: the GPU op benchmarks' inputs, providers and passes, dry-run at a small width on the ``kernel_device``
(on CPU the fused provider runs under the interpreter) so that a harness bug never costs GPU time."""
import os

import pytest
import torch

from benchmarks import cases
from benchmarks.harness import Width, rel_err

from .parity import FP32_TOL

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
    step, params, _ = cases.train_step("tiny", 2, provider, "cpu", frames=3)
    before = [p.detach().clone() for p in params]
    step()
    moved = sum(not torch.equal(a, p) for a, p in zip(before, params))
    assert moved > len(params) // 2, (moved, len(params))  # AdamW moves every weight that got a gradient


def test_an_unknown_train_step_provider_is_refused():
    with pytest.raises(ValueError, match="unknown train-step provider 'fussed'"):
        cases.train_step("tiny", 2, "fussed", "cpu")
    with pytest.raises(ValueError, match="unknown evaluation provider 'fussed'"):
        cases.eval_batch("tiny", 1, 2, "fussed", "cpu")


def test_the_gemm_comparison_compares_like_with_like(kernel_device):
    """benchmarks/test_gemms.py times each TED GEMM (benchmarks/gemm_cases.py) on the op's augmented K through our
    kernel, through cuBLAS-style mm/addmm and through the persistent TMA candidate: at a small shape all give the
    same results (the split-K slices summed), and the augmented K's GEMMs are the op's math — out with both biases,
    dW_aug with dW2, dW4 and the b2/b4 gradients."""
    from benchmarks import gemm_cases as tg

    C, Ca, L = 24, 12, 7
    o = tg.operands(R=2 * 3 * L, C=C, Ca=Ca, tokens=L, device=kernel_device, dtype=torch.float32)
    ours, theirs, persistent = tg.triton_gemms(o), tg.cublas_gemms(o), tg.persistent_gemms(o)
    assert set(theirs) == set(persistent) < set(ours) == set(tg.GEMMS)
    results = {name: fn() for name, fn in ours.items()}
    for name in ("in: z = x·W_inᵀ", "out: x + h·W_outᵀ + b2 + gated b4", "dh = dout·W_out",
                 "dx = dout + dz·W_in (+ b2/b4 sums)"):
        torch.testing.assert_close(results[name], theirs[name](), rtol=1e-5, atol=1e-5, msg=name)
    for name, fn in persistent.items():  # the TMA candidate computes what cuBLAS does
        torch.testing.assert_close(fn(), theirs[name](), rtol=1e-5, atol=1e-5, msg=name)
    x, h, dout = o["x"], o["h"], o["dout"]
    w2, w4 = o["w_out"]
    gate = (torch.arange(x.shape[0], device=kernel_device) % L != 0).float()[:, None]  # patch rows
    want_out = x + h[:, :Ca] @ w2.t() + h[:, Ca:] @ w4.t() + o["b2"] + gate * o["b4"]
    torch.testing.assert_close(theirs["out: x + h·W_outᵀ + b2 + gated b4"](), want_out, rtol=1e-5, atol=1e-5)
    d_w_aug = theirs["dW_out = doutᵀ·h"]()  # [2Ca + AUX, C]
    torch.testing.assert_close(results["dW_out = doutᵀ·h"].reshape(-1, *d_w_aug.shape).sum(0), d_w_aug, rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(d_w_aug[:2 * Ca].t(), dout.t() @ h, rtol=1e-5, atol=1e-5)  # [dW2 | dW4]
    torch.testing.assert_close(d_w_aug[2 * Ca], dout.sum(0), rtol=1e-5, atol=1e-5)  # b2
    torch.testing.assert_close(d_w_aug[2 * Ca + 1], (gate * dout).sum(0), rtol=1e-5, atol=1e-5)  # b4
    assert not d_w_aug[2 * Ca + 2:].any()
    torch.testing.assert_close(results["dW_in = dzᵀ·x"].reshape(-1, C, C).sum(0), theirs["dW_in = dzᵀ·x"](),
                               rtol=1e-5, atol=1e-5)


def test_step_breakdown_charges_every_op_to_a_component():
    """benchmarks/breakdown.py on the tiny training step (CPU, eager adapters): forward ops by the towers' ranges,
    backward ops through the autograd node of the forward op, the optimizer's step; almost nothing unclaimed."""
    from benchmarks.breakdown import HEADS, OPTIMIZER, OTHER, TEXT, VISION, profile_step

    case = cases.train_step("tiny", 2, "eager", "cpu", frames=3)
    case.step()
    ms = profile_step(case.step, case.model, steps=1)
    assert all(ms.get(c, 0) > 0 for c in (VISION, TEXT, HEADS, OPTIMIZER)), ms
    assert ms.get(OTHER, 0) < 0.2 * sum(ms.values()), ms
    assert "encode_video" not in case.model.__dict__  # the ranges are gone afterwards


def test_kernel_classes_of_the_names_an_h100_ran():
    from benchmarks.breakdown import kernel_class

    assert kernel_class("_gemm_kernel") == kernel_class("_stencil_bwd_kernel") == "Triton adapter kernels"
    assert kernel_class("nvjet_sm90_tst_192x192_64x4_2x1_v_bz_coopB_bias_TNN") == "GEMMs"
    assert kernel_class("void cublasLt::splitKreduce_kernel<32, 16, int, float>") == "GEMMs"
    assert kernel_class("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64>>") == "attention"
    assert kernel_class("void at::native::vectorized_elementwise_kernel<8, at::native::CUDAFunctor_add>") == \
        "norms and elementwise"
    assert kernel_class("_quick_gelu_kernel") == "norms and elementwise"


def test_the_persistent_candidate_splits_k_into_partials_that_sum_to_the_product(kernel_device):
    from benchmarks.persistent_gemm import persistent_gemm

    g = torch.Generator().manual_seed(2)
    a, b = (torch.randn(*shape, generator=g).to(kernel_device) for shape in ((200, 128), (200, 36)))  # M: a GPU tile
    parts = persistent_gemm(a.t(), b, split=3)  # aᵀ·b as the weight gradients run it: A stored transposed
    assert parts.shape == (3, 128, 36) and parts.dtype == torch.float32
    torch.testing.assert_close(parts.sum(0), a.t() @ b, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="split-K needs no residual"):
        persistent_gemm(a.t(), b, residual=torch.zeros(128, 36, device=kernel_device), split=3)


def test_the_persistent_tiles_are_fitted_to_the_cards_shared_memory():
    """The H200 refused the 128×256 tile's three stages with fp32 split-K partials (278,584 bytes against 232,448)
    and 128×128's four with fp32 operands (327,712): as many stages as fit, or a clear error."""
    from benchmarks.persistent_gemm import TILES, fitted

    assert fitted(TILES["128x256"], 2, 4).stages == 2  # the H100/H200's 232,448 bytes by default
    assert fitted(TILES["128x128"], 4, 4, 232448).stages == 2
    assert fitted(TILES["128x128"], 2, 2) == TILES["128x128"]  # bf16: its own four stages fit
    with pytest.raises(ValueError, match="needs more than the 100000 bytes"):
        fitted(TILES["128x256"], 4, 4, 100000)


def test_the_stencil_variant_case_is_the_ops_stencils(kernel_device):
    """benchmarks/test_stencils.py times the op's stencils alone: dz and h have z's shape, the TE half of dz is the
    temporal conv's input gradient and the TE half of h the temporal conv of z + in-bias (the reference's, fp64)."""
    from benchmarks.test_stencils import stencil_case
    from kernels import reference

    case = stencil_case(2, 3, (2, 3), 8, kernel_device, torch.float32)
    dz, h = case.backward(), case.forward()
    assert dz.shape == h.shape == (2 * 3 * 7, 16) and torch.isfinite(dz).all() and torch.isfinite(h).all()
    in_bias, weight, bias = (t.double().cpu().contiguous() for t in case.te)
    z_te = case.z[:, :8].double().cpu().view(6, 7, 8).requires_grad_()
    h_te = reference.temporal_conv(z_te + in_bias, 3, weight, bias)
    h_te.backward(case.dh[:, :8].double().cpu().view(6, 7, 8))
    assert rel_err(h[:, :8].cpu(), h_te.detach().reshape(-1, 8)) < FP32_TOL
    assert rel_err(dz[:, :8].cpu(), z_te.grad.reshape(-1, 8)) < FP32_TOL


def test_a_benchmark_run_continues_an_earlier_one(tmp_path):
    """M2CLIP_BENCH_CONTINUE (a second, short GPU call): the earlier run's rows are kept, naming call 1, and not run
    again; the new rows name call 2 and their test."""
    import json
    import os
    import subprocess
    import sys

    def bench(results, *tests, **env):
        env = dict(os.environ, M2CLIP_BENCH_RESULTS=str(results), **env)
        proc = subprocess.run([sys.executable, "-m", "pytest", *tests, "--benchmark-only", "-q",
                               "-p", "no:cacheprovider"], capture_output=True, text=True, env=env,
                              cwd=os.path.dirname(os.path.dirname(__file__)))
        assert proc.returncode == 0, proc.stdout[-2000:]
        return json.loads(next(results.glob("*.json")).read_text())["rows"]

    first = bench(tmp_path / "one", "benchmarks/test_eval.py")
    path = next((tmp_path / "one").glob("*.json"))
    rows = bench(tmp_path / "two", "benchmarks/test_eval.py",
                 "benchmarks/test_train_step.py::test_train_step[tiny-4-eager]", M2CLIP_BENCH_CONTINUE=str(path))
    assert [r["call"] for r in rows] == [1, 2] and rows[0] == first[0]
    assert rows[1]["test"].endswith("test_train_step[tiny-4-eager]") and rows[1]["suite"] == "train_step"


def test_the_priority_rows_name_benchmarks_that_exist():
    """A budgeted GPU run measures priority 0-1 first: the tests ``benchmarks/conftest.py`` puts there by name must
    exist (a renamed test would silently drop to the last priority, past the budget)."""
    import ast
    import glob
    import types

    from benchmarks.conftest import _priority

    here = os.path.join(os.path.dirname(__file__), "..", "benchmarks")
    defined = {node.name for path in glob.glob(os.path.join(here, "test_*.py"))
               for node in ast.walk(ast.parse(open(path).read())) if isinstance(node, ast.FunctionDef)}
    for name in ("test_train_step", "test_ted_gemm", "test_stencil_variant", "test_eval"):
        item = types.SimpleNamespace(originalname=name, name=name,
                                     callspec=types.SimpleNamespace(params={"provider": "fused+graph"}))
        assert name in defined and _priority(item) == 1, name
