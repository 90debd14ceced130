"""Triton's real launch path on a machine without a GPU, for the static model's host measurements.

:class:`FakeH100` stands in for Triton's CUDA driver: kernels compile for sm_90 as they would on an H100,
and everything after compilation (loading the binary, the driver's launch call) is stubbed. So
``kernel[grid](*args)`` runs all of Triton's host-side dispatch — binding, specialisation, cache keys,
autotuner and heuristics — and :func:`kernels.launcher.launch_compiled` runs ours, and both can be timed and
compared launch by launch. Needs a process without ``TRITON_INTERPRET``.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, NamedTuple, Optional

import torch
from triton.backends.compiler import GPUTarget
from triton.runtime import driver


class DriverCall(NamedTuple):
    """One launch as the driver would receive it."""

    kernel: str  # the compiled kernel's hash: one per specialisation and config
    grid: tuple
    stream: int
    packed_metadata: object
    args: tuple


class FakeH100:
    """Triton's active driver without a GPU: compiles for sm_90, loads nothing, launches nothing; every
    launch is appended to ``calls`` while ``recording``."""

    def __init__(self):
        self.calls: list[DriverCall] = []
        self.recording = False
        fake = self

        class Launcher:
            def __init__(self, src, metadata):
                self.hash = metadata.hash

            def __call__(self, gx, gy, gz, stream, function, packed_metadata, launch_metadata, enter, exit_, *args):
                if fake.recording:
                    fake.calls.append(DriverCall(self.hash, (gx, gy, gz), stream, packed_metadata, args))

        class Utils:
            load_binary = staticmethod(lambda name, binary, shared, device: (None, 1, 0, 0, 1024))
            get_device_properties = staticmethod(lambda device: {"max_shared_mem": 232448, "multiprocessor_count": 132})
            unload_module = staticmethod(lambda module: None)

        self.launcher_cls, self.utils = Launcher, Utils()

    def is_active(self) -> bool:
        return True

    def get_current_device(self) -> int:
        return 0

    def set_current_device(self, device: int) -> None:
        pass

    def get_current_stream(self, device: int = 0) -> int:
        return 0

    def get_current_target(self) -> GPUTarget:
        return GPUTarget("cuda", 90, 32)

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def get_benchmarker(self) -> Callable:
        """Autotuning runs each config once (through the stubbed launch) and finds them all equally fast: it
        keeps the first config that fits."""
        def bench(fn, quantiles=None, **kwargs):
            fn()
            return [1.0] * len(quantiles) if quantiles else 1.0
        return bench


_FAKE: Optional[FakeH100] = None


@contextlib.contextmanager
def fake_h100() -> Iterator[FakeH100]:
    """Make :class:`FakeH100` Triton's active driver for the duration (then the one before it, or none:
    ``reset_active`` would look for a GPU). One per process: compiled kernels keep the launcher they were
    loaded with."""
    global _FAKE
    _FAKE = fake = _FAKE or FakeH100()
    previous = driver._active
    driver.set_active(fake)
    try:
        yield fake
    finally:
        driver._active = previous


def _same(a, b) -> bool:
    return a is b or (not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor) and a == b)


def compare_launches(fake: FakeH100, fn: Callable[[], None]) -> dict:
    """Run ``fn`` (ops that launch kernels; inside :func:`kernels.runtime.capture_launches` with this hook)
    with every launch made twice: through Triton, then through ``launch_compiled`` (after it learnt the
    signature). Returns the number of launches and those whose driver calls differ."""
    from kernels.launcher import launch_compiled
    from kernels.runtime import capture_launches

    launches, differing = 0, []

    def both(name, kernel, grid, args, meta):
        nonlocal launches
        launch_compiled(kernel, grid, args, meta)  # learns (through Triton) on first sight of a signature
        fake.calls.clear()
        fake.recording = True
        try:
            kernel[grid](*args, **meta)
            launch_compiled(kernel, grid, args, meta)
        finally:
            fake.recording = False
        launches += 1
        triton_call, ours = fake.calls
        same = (triton_call.kernel == ours.kernel and triton_call.grid == ours.grid
                and triton_call.stream == ours.stream and triton_call.packed_metadata == ours.packed_metadata
                and len(triton_call.args) == len(ours.args)
                and all(_same(a, b) for a, b in zip(triton_call.args, ours.args)))
        if not same:
            differing.append(name)

    with capture_launches(both):
        fn()
    return dict(launches=launches, differing=differing)
