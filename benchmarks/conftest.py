"""Benchmark session: precision settings, hardware ceilings measured once, rows run in priority order under
an optional time budget, and ``benchmarks/results/<card>.json`` rewritten after every row (a run that is
cut short keeps what it measured).

Environment: ``M2CLIP_BENCH_QUICK=1`` trims the shape grid, ``M2CLIP_BENCH_PROVIDERS`` picks providers,
``M2CLIP_BENCH_BUDGET_S`` skips the rows that would start after that many seconds (the issue's target rows
run first, so a budgeted run always has them). ``M2CLIP_BENCH_CONTINUE=<card>.json`` continues an earlier run on
the same card: the rows it holds are kept (each names the call that measured it, as ``call``; the new ones the
next call) and not run again — what a second, short GPU call needs (``scripts/gpu_check.sh``).
"""
import json
import os
import time

import pytest
import torch

from .harness import DTYPES, HAS_CUDA, measure_bandwidth_gbs, measure_peak_tflops, write_results

BUDGET_S = float(os.environ.get("M2CLIP_BENCH_BUDGET_S", "0"))
_START = time.monotonic()
_ROWS: list[dict] = []
_HARDWARE: dict = {}
_CALL = 1  # this run's call number: one more than the continued run's last
_KEPT: dict = {}  # the continued run's entries besides its rows (its profile, its call log)


def _continue(path: str) -> set[str]:
    """Take an earlier run's rows (``path``) as this run's first and return the tests that measured them."""
    global _CALL
    with open(path) as f:
        result = json.load(f)
    earlier = result["rows"]
    _KEPT.update({k: v for k, v in result.items() if k in ("profile", "calls")})
    for row in earlier:
        row.setdefault("call", 1)
    _CALL = 1 + max((row["call"] for row in earlier), default=0)
    _ROWS.extend(earlier)
    return {row["test"] for row in earlier if "test" in row}


_DONE = _continue(os.environ["M2CLIP_BENCH_CONTINUE"]) if os.environ.get("M2CLIP_BENCH_CONTINUE") else set()


def pytest_configure(config):
    if HAS_CUDA:  # fp32 rows: TF32 matmuls for every provider (the fused GEMMs follow PyTorch's setting)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _priority(item) -> int:
    """0: the TED-Adapter target row (ViT-B/16, B=8, T=8, bf16, fwd+bwd) but compile-max; 1: evaluation replayed
    from a graph, the TED-Adapter's GEMMs against cuBLAS and the TMA candidate (tens of seconds: the target row has
    autotuned ours), the stencils' launch variants, then the train step; 2: evaluation's other providers, the text
    adapter's and QuickGELU's rows at that shape, but compile-max; 3: compile-max of those three rows (minutes of
    autotuning: it must not crowd out the rest); 4: the target shape's other dtypes and passes; 5: block; 6: the
    rest of the grid."""
    params = item.callspec.params if hasattr(item, "callspec") else {}
    name = getattr(item, "originalname", item.name)
    if name == "test_train_step":
        return 1
    if name == "test_eval":  # the evaluation target row (the trainer's default: replayed) with the train step
        return 1 if params["provider"] == "fused+graph" else 2
    if name == "test_stencil_variant":  # seconds: the stencils' launch variants, after the GEMMs'
        return 1
    if name == "test_block_fwdbwd":
        return 5
    if name == "test_ted_gemm":
        return 1  # collected before test_train_step: runs first among the priority-1 rows
    if name != "test_op" or params["width"].name != "ViT-B/16" or (params["B"], params["T"]) != (8, 8):
        return 6
    if (params["dtype"], params["passes"]) != ("bf16", "fwdbwd"):
        return 4 if params["op"] == "ted_adapter" else 6
    if params["op"] not in ("ted_adapter", "text_adapter", "quick_gelu", "add_layer_norm"):
        return 6
    if params["provider"] == "compile-max":
        return 3
    return 0 if params["op"] == "ted_adapter" else 2


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=_priority)  # stable: parametrisation order within a priority
    for item in items:
        if item.nodeid in _DONE:
            item.add_marker(pytest.mark.skip(reason="measured by the continued run (M2CLIP_BENCH_CONTINUE)"))


@pytest.fixture(autouse=True)
def _time_budget():
    spent = time.monotonic() - _START
    if BUDGET_S and spent > BUDGET_S:
        pytest.skip(f"M2CLIP_BENCH_BUDGET_S={BUDGET_S:g}: {spent:.0f} s spent before this row")


@pytest.fixture(scope="session")
def hardware() -> dict:
    """Bandwidth (GB/s) and matmul peaks (TFLOP/s) of this card, measured in this run (GPU only)."""
    if not HAS_CUDA:
        pytest.skip("roofline ceilings need a CUDA device")
    if not _HARDWARE:
        _HARDWARE["bandwidth_gbs"] = measure_bandwidth_gbs()
        _HARDWARE["peak_tflops"] = {name: measure_peak_tflops(dtype) for name, dtype in DTYPES.items()}
    return _HARDWARE


@pytest.fixture
def record(request):
    """Append one result row (a dict) to this run's results and rewrite the results file; the row names its
    test and this run's call."""

    def add(row: dict) -> None:
        _ROWS.append(dict(row, test=request.node.nodeid, call=_CALL))
        write_results(_ROWS, _HARDWARE or None, _KEPT)

    return add


def pytest_sessionfinish(session, exitstatus):
    if _ROWS:
        print(f"\nbenchmark results ({len(_ROWS)} rows): {write_results(_ROWS, _HARDWARE or None, _KEPT)}")
