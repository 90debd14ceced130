"""Launching compiled Triton kernels for a few microseconds of host time instead of tens.

``kernel[grid](*args)`` re-derives everything on every call: Triton binds the arguments, specialises each
one (the alignment of every pointer, the divisibility of every integer), builds a cache key from the
compile options, and above that the autotuner looks up its choice and the heuristics recompute theirs.
Measured with Triton's real dispatch and only the driver call stubbed (``benchmarks/static/host.py``), that is
tens of microseconds a launch, and on an H100 host the 9 launches of a TED-Adapter forward+backward took
longer to issue than the GPU took to run them.

So the first launch of each *signature* goes through Triton as usual (compiling and autotuning on the way),
and we keep what Triton finally handed the driver: the compiled kernel and the trailing constexpr and
config arguments. Later launches with the same signature call the compiled kernel's launcher directly,
with exactly the arguments Triton would pass (``benchmarks/static/host.py`` checks this launch by launch).

A signature is everything those choices can depend on: the kernel, the current device, every
non-tensor argument *by value* (integers, flags, None), every tensor by dtype and address modulo 16, and
the constexpr keywords. Since integers enter by value, the autotuner's key, the heuristics and Triton's
own specialisation are all functions of the signature. While a profiler's launch hooks are installed
(``triton.knobs.runtime.launch_enter_hook``: a function, or a non-empty ``HookChain`` since Triton 3.5), every
launch goes through Triton, which feeds them; otherwise the driver call gets no hooks and no launch metadata.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

from triton.compiler.compiler import CompiledKernel
from triton.runtime import driver
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction

try:
    from triton import knobs
except ImportError:  # older Triton: no knobs module, and launches always go through Triton (replays())
    knobs = None


class _Known(NamedTuple):
    """How Triton launched one signature: the launcher of the compiled kernel and its trailing arguments."""

    launcher: Callable
    function: int
    packed_metadata: Any
    tail: tuple  # the values of the parameters after the positional arguments, in the kernel's order
    index: dict  # parameter name -> position, for grid functions


@functools.cache
def replays() -> bool:
    """Whether this Triton's ``JITFunction.run`` hands the launcher every bound argument (constexprs too) after
    the nine fixed ones, which is what :func:`launch_compiled` replays (checked: Triton 3.6 on an H100, 3.8 on
    the static model's stand-in driver). Older ones pass only the non-constexpr values: there every launch goes
    through Triton. Read from Triton's source once, at the first GPU launch (not at import)."""
    try:
        source = inspect.getsource(JITFunction.run)
    except (OSError, TypeError):
        return False
    run_is_property = isinstance(inspect.getattr_static(CompiledKernel, "run", None), property)
    return (knobs is not None and run_is_property and "kernel.packed_metadata, launch_metadata" in source
            and "*bound_args.values())" in source)


_PLAIN = frozenset({int, bool, float, str, type(None)})  # arguments that enter a signature by value; else tensors
_THROUGH_TRITON = object()  # a signature we always leave to Triton (see _learn)
_known: dict[tuple, Any] = {}
_recorded: list[tuple[tuple, dict]] = []  # (args, kwargs) of JITFunction.run calls while learning
_hooked: set[int] = set()
_learning = False  # True while _learn launches through Triton


class _BoundArgs(Mapping):
    """The kernel's arguments by name, as Triton hands them to a grid function."""

    __slots__ = ("index", "values")

    def __init__(self, index: dict, values: tuple):
        self.index, self.values = index, values

    def __getitem__(self, name: str):
        return self.values[self.index[name]]

    def __iter__(self):
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)


def launch_compiled(kernel, grid, args: tuple, meta: dict) -> None:
    """``kernel[grid](*args, **meta)`` on the GPU, through Triton only the first time per signature."""
    if not replays():
        kernel[grid](*args, **meta)
        return
    enter, leave = knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook
    if (enter is not None and getattr(enter, "calls", True)) or (leave is not None and getattr(leave, "calls", True)):
        kernel[grid](*args, **meta)  # a profiler listens (a hook function, or a non-empty HookChain)
        return
    device = driver.active.get_current_device()
    try:
        signature = (kernel, device, *meta.items(),
                     *[a if a.__class__ in _PLAIN else (a.dtype, a.data_ptr() & 15) for a in args])
        known = _known.get(signature)
    except (AttributeError, TypeError):  # an argument that is neither a plain value nor a tensor, or unhashable
        kernel[grid](*args, **meta)
        return
    if known is None:
        _known[signature] = _learn(kernel, grid, args, meta)
        return
    if known is _THROUGH_TRITON:
        kernel[grid](*args, **meta)
        return
    if callable(grid):
        grid = grid(_BoundArgs(known.index, (*args, *known.tail)))
    known.launcher(grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1,
                   driver.active.get_current_stream(device), known.function, known.packed_metadata,
                   None, None, None, *args, *known.tail)


def _jit_function(kernel) -> JITFunction:
    fn = kernel
    while not isinstance(fn, JITFunction):
        fn = fn.fn
    return fn


def _record(*args, **kwargs) -> None:
    """A pre-run hook of every JITFunction we launch: keeps its arguments while learning."""
    if _learning:
        _recorded.append((args, kwargs))


def _has_hooks(kernel) -> bool:
    """Autotuners that zero or restore buffers, or run config hooks, must go through Triton every time."""
    while not isinstance(kernel, JITFunction):
        if isinstance(kernel, Autotuner) and (kernel.reset_to_zero or kernel.restore_value
                                              or any(c.pre_hook is not None for c in kernel.configs)):
            return True
        kernel = kernel.fn
    return False


def _learn(kernel, grid, args: tuple, meta: dict) -> Any:
    """Launch through Triton and keep what it passed to the driver (the last ``JITFunction.run`` call: an
    autotuner benchmarks first, then launches its choice)."""
    global _learning
    jit = _jit_function(kernel)
    if id(jit) not in _hooked:
        jit.add_pre_run_hook(_record)
        _hooked.add(id(jit))
    _recorded.clear()
    _learning = True
    try:
        compiled = kernel[grid](*args, **meta)
    finally:
        _learning = False
    if compiled is None or not _recorded or _has_hooks(kernel):
        return _THROUGH_TRITON
    run_args, run_kwargs = _recorded[-1]
    _recorded.clear()
    if len(run_args) != len(args) or any(a is not b for a, b in zip(run_args, args)):
        return _THROUGH_TRITON  # something between us and the JIT rewrote the positional arguments
    tail = tuple(run_kwargs.get(p.name, p.default) for p in jit.params[len(args):])
    if any(v is inspect.Parameter.empty for v in tail):
        return _THROUGH_TRITON
    return _Known(compiled.run, compiled.function, compiled.packed_metadata, tail,
                  {name: i for i, name in enumerate(jit.arg_names)})

