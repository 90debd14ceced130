"""The time model of the static performance model (:mod:`benchmarks.static`): per-card constants and a kernel's
predicted time from its features — pure arithmetic, no compiler, so the report can replay it on the features of
kernels a GPU measured (:func:`calibrate`). Every number it gives is a prediction."""
from __future__ import annotations

import heapq
import math
import re

# Per card (sm_90 both; the H200 is the H100's chip with faster HBM3e). "achieved" figures are what a
# device-to-device copy and an 8k bf16 GEMM reach on an H100 (the H200's HBM figure is its datasheet scaled by the
# H100's achieved/datasheet ratio: predicted, not measured). The rest, with where each comes from:
# - l2_achieved: L2 -> SM bandwidth the GEMMs reach. From the H100's Nsight Compute profile: the z GEMM moved
#   349 MB through L2 (its A and B tiles) in 51.2 µs at 58.6% of L2 peak, at Nsight's locked 1.4 GHz: peak
#   ≈ 11.6 TB/s there, ≈ 16 TB/s at 1.98 GHz, of which ~60% is reached.
# - warps_for_full_issue: resident warps a scheduler needs to issue every cycle in the stencils' load-heavy,
#   dependent instruction streams; below it issue runs at warps / this. Fitted to the H100's old stencil_fwd
#   (4 warps a scheduler: 37.5 µs measured against 24.3 µs of instructions at full rate).
# - dependent_load_us: one wait for global memory in a loop whose next load waits on it (H100, 2026-11-26:
#   summing 197 partial rows one dependent load at a time took ~103 µs).
# - launch_us: a kernel's ramp-up and tail as a profiler's duration sees it (assumed, not fitted).
# For the whole step (:func:`step_roofline`), rates measured at the step's shapes on the H100 (2026-11-26):
# - cublas_bf16: eager's cuBLAS GEMMs at M = B·T·197 rows ran 445–495 TFLOP/s: 470;
# - triton_gemm_bf16: our Triton GEMM in the TED-Adapter, 340 TFLOP/s (issue 23);
# - attention_bf16: flash attention at head dim 64, 197 tokens — assumed (not measured here), forward and backward;
# - fp32_achieved: IEEE fp32 GEMMs (no tensor cores) — assumed, ~75% of the H100's 67 TFLOP/s datasheet figure.
H100 = dict(
    name="H100 SXM (sm_90)", sms=132, clock_hz=1.98e9, hbm_datasheet=3.35e12, hbm_achieved=3.0e12,
    bf16_datasheet=989e12, bf16_achieved=790e12, tf32_achieved=395e12, issue_per_sm_cycle=4,
    registers_per_sm=65536, shared_per_sm=228 * 1024, max_warps_per_sm=64, max_ctas_per_sm=32, l2_bytes=50 << 20,
    l2_achieved=10e12, warps_for_full_issue=6.2, dependent_load_us=0.52, launch_us=1.0,
    cublas_bf16=470e12, triton_gemm_bf16=340e12, attention_bf16=250e12, fp32_achieved=50e12,
)
H200 = dict(H100, name="H200 SXM (sm_90)", hbm_datasheet=4.8e12, hbm_achieved=4.3e12)
CARDS = {"H100": H100, "H200": H200}


def ctas_per_sm(warps: int, registers: int, shared: int, card: dict) -> int:
    """Programs resident on one SM at once: the least of the warp, register (allocated per warp in units of
    256, i.e. 8 a thread), shared-memory and CTA limits."""
    per_cta_registers = -(-max(registers, 1) // 8) * 8 * 32 * warps
    limits = [card["max_ctas_per_sm"], card["max_warps_per_sm"] // warps, card["registers_per_sm"] // per_cta_registers]
    if shared:
        limits.append(card["shared_per_sm"] // shared)
    return max(1, min(limits))


def makespan(chains: list[float], slots: int) -> float:
    """When the last of a grid's programs finishes, each taking its chain of dependent memory waits: the GPU
    starts them in launch order, each on the first of ``slots`` resident places to come free."""
    free = [0.0] * min(slots, len(chains))
    heapq.heapify(free)
    for length in chains:
        heapq.heapreplace(free, free[0] + length)
    return max(free, default=0.0)


def timing(f: dict, card: dict) -> dict:
    """The time model: a kernel's terms and prediction on ``card`` from its features ``f`` (a :class:`KernelRow`'s
    fields). Each term is a lower bound; the prediction is the largest plus ``launch_us``:
    - memory: HBM bytes / achieved bandwidth; L2: L2 bytes / achieved L2 bandwidth;
    - tensor cores: FLOPs / achieved peak, × (K steps + stages − 1) / K steps for a non-persistent GEMM (each
      tile fills its pipeline), ÷ the share of the SMs kept busy (a small grid, the last wave);
    - issue: warp-instructions / (4 a cycle per SM), slowed by warps / ``warps_for_full_issue`` where too few
      warps are resident to hide the stencils' latencies (not for tensor-core kernels, whose waits are on the
      MMA), ÷ the same busy share;
    - latency: the grid's chains of dependent memory waits (``f["chains"]``: ``[waits, programs]`` in launch
      order), scheduled on the resident program slots (:func:`makespan`)."""
    ctas = ctas_per_sm(f["warps"], f["registers"], f["shared"], card)
    resident = ctas * card["sms"]
    waves = f["programs"] / resident
    # the share of the SMs' time the programs keep busy: the busiest SM runs ceil(programs / SMs) of them, however
    # many are resident at once (they share its tensor cores and issue slots)
    busy = f["programs"] / (math.ceil(f["programs"] / card["sms"]) * card["sms"])
    per_sm = min(ctas, max(1.0, f["programs"] / card["sms"]))  # programs resident on a busy SM
    peak = card["tf32_achieved"] if f["dot_fp32"] else card["bf16_achieved"]
    fill = (f["k_steps"] + f["stages"] - 1) / f["k_steps"] if f["k_steps"] else 1.0
    warps_per_scheduler = per_sm * f["warps"] / 4
    issue_efficiency = 1.0 if f["flops"] else min(1.0, warps_per_scheduler / card["warps_for_full_issue"])
    issue_rate = card["issue_per_sm_cycle"] * card["sms"] * card["clock_hz"]
    chains = [length for length, count in f["chains"] for _ in range(int(count))]  # in launch order
    terms = dict(
        memory_us=f["bytes"] / card["hbm_achieved"] * 1e6,
        l2_us=f["l2_bytes"] / card["l2_achieved"] * 1e6,
        compute_us=f["flops"] / peak * fill / busy * 1e6,
        issue_us=f["warp_instructions"] / issue_rate / issue_efficiency / busy * 1e6,
        latency_us=makespan(chains, resident) * card["dependent_load_us"],
    )
    return dict(terms, ctas_per_sm=ctas, waves=waves, predicted_us=max(terms.values()) + card["launch_us"])


def calibrate(measured_us: dict[str, float], predicted: dict[str, list[dict]], card: dict) -> list[dict]:
    """Measured / predicted per kernel name: ``measured_us`` (a profile's per-name device µs, a mean where a
    name ran several times), ``predicted`` the features of the kernels that ran under each name."""
    rows = []
    for name, us in measured_us.items():
        kernel = name.split(" ")[0]
        if kernel in predicted:
            times = [timing(f, card) for f in predicted[kernel]]
            pred = sum(t["predicted_us"] for t in times) / len(times)
            bound = max(("memory_us", "l2_us", "compute_us", "issue_us", "latency_us"), key=lambda k: times[0][k])
            rows.append(dict(kernel=name, measured_us=us, predicted_us=pred, ratio=us / pred,
                             bound=bound.removesuffix("_us")))
    return rows


# A traced step's ops by kind, as patterns matched at the start of an op's name (benchmarks/step_trace.py names
# aten ops by their packet, Triton launches "triton:<kernel>").
STEP_KINDS = (
    ("GEMMs, cuBLAS", r"(mm|addmm|bmm|baddbmm)_?$"),
    ("GEMMs, Triton", r"triton:gemm$"),
    ("attention", r"_scaled_dot_product"),
    ("TED stencils and partial sums", r"triton:(stencil|sum_partials)"),
    ("optimizer and clipping", r"_fused_adam|_foreach"),
)
OTHER_KIND = "norms, activations, adds, casts"


def step_kind(op: str) -> str:
    """The kind of a traced op (:data:`STEP_KINDS`; the rest is :data:`OTHER_KIND`)."""
    return next((kind for kind, pattern in STEP_KINDS if re.match(pattern, op)), OTHER_KIND)


def step_roofline(by_op: dict[str, list[float]], card: dict) -> dict[str, float]:
    """Predicted device ms of a traced step per kind, from ``by_op`` ``{op: [kernels, bytes, flops]}``: each op's
    kernels together, their FLOPs at the kind's rate (cuBLAS, our Triton GEMM, attention) or their bytes at the
    HBM bandwidth, whichever is longer, plus ``launch_us`` a kernel. A roofline of the traced kernels, not of a
    GPU's profile."""
    rates = {"GEMMs, cuBLAS": card["cublas_bf16"], "GEMMs, Triton": card["triton_gemm_bf16"],
             "attention": card["attention_bf16"]}
    kinds: dict[str, float] = {}
    for op, (kernels, nbytes, flops) in by_op.items():
        kind = step_kind(op)
        compute_s = flops / rates[kind] if kind in rates else 0.0
        ms = max(nbytes / card["hbm_achieved"], compute_s) * 1e3 + kernels * card["launch_us"] * 1e-3
        kinds[kind] = kinds.get(kind, 0.0) + ms
    return kinds
