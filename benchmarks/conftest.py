"""Benchmark session: hardware ceilings measured once, every row collected, and the results file
``benchmarks/results/<card>.json`` written at the end."""
import pytest

from .harness import DTYPES, HAS_CUDA, measure_bandwidth_gbs, measure_peak_tflops, write_results

_ROWS: list[dict] = []
_HARDWARE: dict = {}


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
def record():
    """Append one result row (a dict) to this run's results."""
    return _ROWS.append


def pytest_sessionfinish(session, exitstatus):
    if _ROWS:
        path = write_results(_ROWS, _HARDWARE or None)
        print(f"\nbenchmark results: {path}")
