"""Ahead-of-time compilation for sm_90 and what the binary says: a launch's Triton signature and
specialisation, registers, spills and shared memory (``cuobjdump --dump-resource-usage``), and the SASS's
instructions inside and outside loops."""
from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Optional

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ..sass import parse_sass
from ..tracing import Launch

TARGET = GPUTarget("cuda", 90, 32)

def _cuobjdump() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


@dataclass
class Compiled:
    registers: int
    spills: int  # bytes of local memory (spilled registers) a thread
    shared: int
    instructions: int  # SASS instructions in the binary
    outside_loops: int  # instructions not inside a loop
    loop_bodies: list[int]  # instructions of each loop's body
    wgmma: bool  # Hopper's warpgroup MMA in the PTX
    tf32_rounding: bool  # operands rounded to nearest TF32 (cvt.rna.tf32.f32) in the PTX
    loop_memory_rounds: list[float]  # each loop's dependent global-memory round trips a trip (memory_rounds)
    outside_memory_rounds: float  # the same outside the loops, once a program


def _signature_and_specialisation(fn, values: dict) -> tuple[dict, dict, dict]:
    """Triton signature, constexprs and divisibility attributes for a launch of ``fn`` with ``values``."""
    dtypes = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.int64: "i64",
              torch.int32: "i32"}
    signature, constexprs, attrs = {}, {}, {}
    for i, param in enumerate(fn.params):
        name, value = param.name, values[param.name]
        if param.is_constexpr or value is None or isinstance(value, (str, bool)) or hasattr(value, "primitive_bitwidth"):
            signature[name], constexprs[name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[name] = "*" + dtypes[value.dtype]
            if value.data_ptr() % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, int):
            if value == 1:  # Triton specialises integers equal to 1 as constants
                signature[name], constexprs[name] = "constexpr", 1
                continue
            signature[name] = "i64" if abs(value) >= 2 ** 31 else "i32"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "fp32"
    return signature, constexprs, attrs


@functools.lru_cache(maxsize=None)
def _compile(fn, signature: tuple, constexprs: tuple, attrs: tuple, num_warps: int, num_stages: int,
             maxnreg: Optional[int] = None) -> Compiled:
    source = ASTSource(fn, dict(signature), dict(constexprs), {k: v for k, v in attrs})
    options = dict(num_warps=num_warps, num_stages=num_stages, **({"maxnreg": maxnreg} if maxnreg else {}))
    kernel = triton.compile(source, target=TARGET, options=options)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        usage = subprocess.check_output([_cuobjdump(), "--dump-resource-usage", f.name], text=True)
        sass = subprocess.check_output([_cuobjdump(), "-sass", f.name], text=True)
    reg = int(re.search(r"REG:(\d+)", usage).group(1))
    local = int(re.search(r"LOCAL:(\d+)", usage).group(1))
    stack = int(re.search(r"STACK:(\d+)", usage).group(1))
    total, outside, bodies, rounds, outside_rounds = parse_sass(sass)
    return Compiled(reg, max(local, stack), kernel.metadata.shared, total, outside, bodies,
                    "wgmma" in kernel.asm["ptx"], "cvt.rna.tf32.f32" in kernel.asm["ptx"], rounds, outside_rounds)


def _resolve(launch: "Launch") -> tuple[object, list, dict, dict]:
    """(JITFunction, autotune configs that survive pruning or [None], heuristics, argument values) of a launch."""
    kernel, configs, heuristics = launch.kernel, [None], {}
    if isinstance(kernel, triton.runtime.Autotuner):
        autotuner, kernel = kernel, kernel.fn
        configs = autotuner.configs
    if isinstance(kernel, triton.runtime.Heuristics):
        heuristics, kernel = kernel.values, kernel.fn
    values = dict(zip([p.name for p in kernel.params], launch.args))
    values.update({k: v for k, v in launch.meta.items() if k not in ("num_warps", "num_stages")})
    if configs != [None] and autotuner.early_config_prune:
        configs = autotuner.early_config_prune(configs, values, **launch.meta)
    return kernel, configs, heuristics, values


def _config_name(config) -> str:
    if config is None:
        return "-"
    k = config.kwargs
    return f"{k['BLOCK_M']}x{k['BLOCK_N']}x{k['BLOCK_K']} w{config.num_warps} s{config.num_stages}"


def _freeze(fn, values: dict) -> tuple:
    signature, constexprs, attrs = _signature_and_specialisation(fn, values)
    return (tuple(signature.items()), tuple(constexprs.items()), tuple((k, tuple(map(tuple, v))) for k, v in attrs.items()))
