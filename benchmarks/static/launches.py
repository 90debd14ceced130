"""Each launch's features (compiled with every autotune config; bytes, L2 traffic, loop trips) and its
predicted time from :mod:`benchmarks.time_model`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import triton

from ..time_model import CARDS, H100, timing
from ..tracing import Launch, unique_bytes
from .compile import _compile, _config_name, _freeze, _resolve

@dataclass
class KernelRow:
    """One kernel: what the trace and the compiler say about it (its *features*, card-independent), and the
    time model's terms on an H100 (:func:`timing`; every card's prediction in ``by_card``)."""
    name: str
    programs: int
    warps: int
    bytes: int  # HBM: each tensor it touches, once
    flops: float
    config: str
    registers: int
    spills: int
    shared: int
    sass_instructions: int
    warp_instructions: float
    l2_bytes: float = 0.0  # L2 -> SM traffic: what its programs load (tiles re-read by other programs count again)
    k_steps: float = 0.0  # a GEMM program's K-loop trips
    stages: int = 0
    chains: list = field(default_factory=list)  # [waits, programs]: dependent memory waits a program
    memory_us: float = 0.0
    l2_us: float = 0.0
    compute_us: float = 0.0
    issue_us: float = 0.0
    latency_us: float = 0.0
    ctas_per_sm: int = 0
    waves: float = 0.0
    predicted_us: float = 0.0
    by_card: dict = field(default_factory=dict)
    wgmma: bool = False
    tf32_rounding: bool = False
    dot_fp32: bool = False
    variants: list = field(default_factory=list)  # (config, registers, spills) of every autotune config

    @property
    def bound(self) -> str:
        return max((self.memory_us, "memory"), (self.l2_us, "L2"), (self.compute_us, "tensor cores"),
                   (self.issue_us, "issue"), (self.latency_us, "latency"))[1]


def _l2_bytes(name: str, values: dict, hbm_bytes: int) -> float:
    """Bytes a launch's programs load from L2 (and store): a GEMM re-reads A once per column tile and B once
    per row tile; a stencil program reads, each frame, its positions plus (TD) the 3×3 halo of ±(GW + 1)
    rows, as many times as it has inputs; other kernels read what they touch once."""
    if name == "gemm":
        a, b = values["a_ptr"], values["b_ptr"]
        M, N, K = values["M"], values["N"], values["K"]
        reads = (M * K * triton.cdiv(N, values["BLOCK_N"]) * a.element_size()
                 + K * N * triton.cdiv(M, values["BLOCK_M"]) * b.element_size())
        return reads + hbm_bytes - M * K * a.element_size() - K * N * b.element_size()
    if name.startswith("stencil"):
        z = values["z_ptr"]
        halo = 2 * (values["GW"] + 1) / values["BLOCK_N"] if values["HAS_TD"] else 0.0
        td_share = values["C_TD"] / (values["C_TE"] + values["C_TD"])
        return hbm_bytes + z.numel() * z.element_size() * td_share * halo
    return float(hbm_bytes)


def _trips(name: str, values: dict) -> float:
    """Iterations of each loop of a program of kernel ``name``."""
    if name == "gemm":
        return max(1.0, min(values["K_SPLIT"], values["K"]) / values["BLOCK_K"])
    if name.startswith("stencil"):  # a program walks its clips' frames
        return float(values["T"])
    if name == "sum_partials":
        return float(_row_tiles(values).mean())
    return 1.0


def _row_tiles(values: dict) -> torch.Tensor:
    """sum_partials: each program's trips, one per ``ROWS`` partial rows of its plan row."""
    return (values["plan_ptr"][:, 2].double() / values["ROWS"]).ceil()


def _chain_counts(values: dict, compiled) -> list[list[float]]:
    """sum_partials' dependent memory waits a program as ``[waits, programs]`` runs in launch order (few):
    the rounds outside its loop (the plan row, then what depends on it) and each trip's, from its SASS."""
    waits = compiled.outside_memory_rounds + _row_tiles(values) * sum(compiled.loop_memory_rounds)
    lengths, counts = waits.unique_consecutive(return_counts=True)  # the plan's order: the launch's
    return [[float(n), int(c)] for n, c in zip(lengths.tolist(), counts.tolist())]


def _program_mix(launch: Launch, values: dict) -> list[tuple[dict, float]]:
    """Variants of a launch whose programs run different code, with their share of the programs: a stencil
    launch's TE and TD programs, compiled apart so each is charged only its own instructions."""
    if launch.name.startswith("stencil") and values["HAS_TE"] and values["HAS_TD"]:
        n_te = values["N_TE_BLOCKS"]
        share = n_te / (n_te + triton.cdiv(values["C_TD"], values["BLOCK_C"]))
        return [({"HAS_TD": False}, share), ({"HAS_TE": False}, 1 - share)]
    return [({}, 1.0)]


def predict(launch: Launch) -> KernelRow:
    """The launch's features (compiled for sm_90 with each autotune config) and its predicted time: the config
    predicted fastest on an H100 (what autotuning should find), its time on every card in ``by_card``."""
    fn, configs, heuristics, base = _resolve(launch)
    tensors = [a for a in launch.args if isinstance(a, torch.Tensor)]
    hbm = unique_bytes(tensors)
    best, variants = None, []
    for config in configs:
        values = dict(base)
        warps, stages = launch.meta.get("num_warps", 4), launch.meta.get("num_stages", 3)
        if config is not None:
            values.update(config.kwargs)
            warps, stages = config.num_warps, config.num_stages
        values.update({k: h(values) for k, h in heuristics.items()})
        grid = launch.grid(values) if callable(launch.grid) else launch.grid
        programs = grid[0] * (grid[1] if len(grid) > 1 else 1)
        maxnreg = launch.meta.get("maxnreg")
        full = _compile(fn, *_freeze(fn, values), warps, stages, maxnreg)
        variants.append((_config_name(config), full.registers, full.spills))
        trips = _trips(launch.name, values)
        warp_instructions, walks = 0.0, []
        for overrides, share in _program_mix(launch, values):
            part = full if not overrides else _compile(fn, *_freeze(fn, {**values, **overrides}), warps, stages,
                                                       maxnreg)
            per_program = part.outside_loops + sum(part.loop_bodies) * trips
            warp_instructions += programs * share * warps * per_program
            # a stencil program's dependent memory rounds (from its SASS), one after another: its prologue's, then
            # each frame's of the walk
            walks.append([part.outside_memory_rounds + trips * sum(part.loop_memory_rounds), round(programs * share)])
        gemm = launch.name == "gemm"
        row = KernelRow(
            name=launch.name, programs=programs, warps=warps, bytes=hbm,
            flops=2.0 * base["M"] * base["N"] * base["K"] if gemm else 0.0, config=_config_name(config),
            registers=full.registers, spills=full.spills, shared=full.shared, sass_instructions=full.instructions,
            warp_instructions=warp_instructions, l2_bytes=_l2_bytes(launch.name, values, hbm),
            k_steps=trips if gemm else 0.0, stages=stages if gemm else 0,
            chains=(_chain_counts(values, full) if launch.name == "sum_partials"
                    else walks if launch.name.startswith("stencil") else []),
            wgmma=full.wgmma, tf32_rounding=full.tf32_rounding, dot_fp32=gemm and str(base["DOT_DTYPE"]) == "fp32",
        )
        features = asdict(row)
        for key, value in timing(features, H100).items():
            setattr(row, key, value)
        row.by_card = {card: timing(features, spec)["predicted_us"] for card, spec in CARDS.items()}
        if best is None or row.predicted_us < best.predicted_us:
            best = row
    best.variants = variants
    return best




def _unsplit(launch: Launch) -> Launch:
    """The same split-K GEMM launch with one K slice: what the weight gradients would cost without split-K."""
    fn = _resolve(launch)[0]
    names = [p.name for p in fn.params]
    args = list(launch.args)
    args[names.index("K_SPLIT")] = -(-args[names.index("K")] // 64) * 64
    return Launch(launch.name, launch.kernel, lambda meta: (launch.grid(meta)[0], 1), tuple(args), launch.meta)


def split_k_gain(launches: list[Launch], rows: list[KernelRow]) -> list[dict]:
    """For each split-K GEMM: its slices and predicted µs, and the predicted µs with one slice."""
    out = []
    for launch, row in zip(launches, rows):
        if launch.name == "gemm":
            fn, configs, heuristics, values = _resolve(launch)
            slices = launch.grid({**values, **configs[0].kwargs})[1] if configs[0] is not None else 1
            if slices > 1:
                out.append(dict(slices=slices, predicted_us=row.predicted_us,
                                unsplit_us=predict(_unsplit(launch)).predicted_us))
    return out
