"""Turn ``benchmarks/results/*.json`` into Markdown tables and a PNG chart, and refresh the README's
performance section. ``python -m benchmarks.report [--readme README.md]``."""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
from collections import Counter, defaultdict
from typing import Optional

from .harness import RESULTS_DIR
from .time_model import CARDS, calibrate, timing

START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
HEADLINE = dict(width="ViT-B/16", B=8, T=8, dtype="bf16", passes="fwdbwd")


def _ms(row: Optional[dict]) -> str:
    return "–" if row is None else f"{row['median_ms']:.3f}"


def ops_table(rows: list[dict]) -> list[str]:
    groups: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        if r["suite"] == "ops":
            groups[(r["op"], r["width"], r["B"], r["T"], r["dtype"], r["passes"])][r["provider"]] = r
    if not groups:
        return []
    out = ["| op | width | B | T | dtype | pass | fused ms | eager ms | compile ms | compile-max ms | "
           "× eager | × compile-max | fused % of roofline |", "|" + "---|" * 13]
    graphs = any("fused-graph" in p for p in groups.values())
    if graphs:  # CUDA-graph replays: device time alone
        out = [out[0] + " fused, graph ms | eager, graph ms | × eager, graphs | fused, graph % of roofline |",
               out[1] + "---|" * 4]
    if any("call" in r for p in groups.values() for r in p.values()):
        out = [out[0] + " calls (fused, eager, compile, compile-max) |", out[1] + "---|"]
    for key in sorted(groups):
        p = groups[key]
        fused = p.get("fused")

        def speedup(name: str) -> str:
            return f"{p[name]['median_ms'] / fused['median_ms']:.2f}" if fused and name in p else "–"

        roof = f"{100 * fused['fraction_of_floor']:.0f}%" if fused else "–"
        line = (f"| {' | '.join(map(str, key))} | {_ms(fused)} | {_ms(p.get('eager'))} | {_ms(p.get('compile'))} | "
                f"{_ms(p.get('compile-max'))} | {speedup('eager')} | {speedup('compile-max')} | {roof} |")
        if graphs:
            fg, eg = p.get("fused-graph"), p.get("eager-graph")
            ratio = f"{eg['median_ms'] / fg['median_ms']:.2f}" if fg and eg else "–"
            groof = f"{100 * fg['fraction_of_floor']:.0f}%" if fg else "–"
            line += f" {_ms(fg)} | {_ms(eg)} | {ratio} | {groof} |"
        if out[0].endswith("compile-max) |"):
            line += " " + ", ".join(str(p[n].get("call", "–")) if n in p else "–"
                                    for n in ("fused", "eager", "compile", "compile-max")) + " |"
        out.append(line)
    return out


def block_table(rows: list[dict]) -> list[str]:
    block = [r for r in rows if r["suite"] == "block"]
    if not block:
        return []
    out = ["| block | dtype | provider | fwd+bwd ms | peak GB |", "|---|---|---|---|---|"]
    for r in sorted(block, key=lambda r: (r["width"], r["dtype"], r["median_ms"])):
        out.append(f"| {r['width']} B={r['B']} T={r['T']} | {r['dtype']} | {r['provider']} | {r['median_ms']:.3f} | "
                   f"{r['peak_mem_gb']:.2f} |")
    return out


def gemms_table(rows: list[dict]) -> list[str]:
    """The TED-Adapter's GEMMs, ours against cuBLAS (``benchmarks/test_gemms.py``), replayed from a CUDA graph."""
    times: dict[str, dict[str, float]] = defaultdict(dict)
    for r in rows:
        if r["suite"] == "gemms":
            times[r["gemm"]][r["provider"]] = 1000 * r["median_ms"]
    if not times:
        return []
    out = ["| TED-Adapter GEMM (ViT-B/16, B=8, T=8, bf16) | Triton µs | cuBLAS µs | faster |", "|---|---|---|---|"]
    for gemm, t in times.items():
        ours, cublas = t.get("triton"), t.get("cublas")
        faster = "–" if ours is None or cublas is None else ("cuBLAS" if cublas < ours else "Triton")
        out.append(f"| {gemm} | {'–' if ours is None else f'{ours:.1f}'} | "
                   f"{'–' if cublas is None else f'{cublas:.1f}'} | {faster} |")
    totals = [sum(t.get(p, 0.0) for t in times.values()) for p in ("triton", "cublas")]
    return out + [f"| all | {totals[0]:.1f} | {totals[1]:.1f} | {'cuBLAS' if totals[1] < totals[0] else 'Triton'} |"]


def train_table(rows: list[dict]) -> list[str]:
    steps = [r for r in rows if r["suite"] == "train_step"]
    if not steps:
        return []
    calls = any("call" in r for r in steps)
    out = ["| preset | B | provider | step ms | host ms | clips/s | TFLOP/s | MFU | peak memory | trainable params |"
           + (" call |" if calls else ""), "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if calls else "")]
    for r in sorted(steps, key=lambda r: (r["width"], r["B"], r["provider"])):
        mem = "–" if r["peak_mem_gb"] is None else f"{r['peak_mem_gb']:.2f} GB"  # a CPU, or not read
        host = "–" if r.get("host_ms") is None else f"{r['host_ms']:.1f}"  # rows before issue 21 lack these
        tflops = "–" if r.get("tflops") is None else f"{r['tflops']:.1f}"
        mfu = "–" if r.get("mfu") is None else f"{100 * r['mfu']:.0f}%"
        out.append(f"| {r['width']} | {r['B']} | {r['provider']} | {r['median_ms']:.1f} | {host} | {r['clips_per_s']:.1f} | "
                   f"{tflops} | {mfu} | {mem} | {r['trainable_params']:,} |" + (f" {r.get('call', '–')} |" if calls else ""))
    return out


def stencils_table(rows: list[dict]) -> list[str]:
    """The stencils' launch variants (``benchmarks/test_stencils.py``), by kernel, fastest first."""
    variants = sorted((r for r in rows if r["suite"] == "stencils"),
                      key=lambda r: (r["kernel"], r["median_ms"]))
    if not variants:
        return []
    return (["| stencil launch (ViT-B/16, B=8, T=8, bf16, fp32 parameters, replayed) | kernel | µs |", "|---|---|---|"]
            + [f"| {r['provider']} | {r['kernel']} | {1000 * r['median_ms']:.1f} |" for r in variants])


def eval_table(rows: list[dict]) -> list[str]:
    """Evaluation from clips in memory: videos/s of a loader batch at the test views, per provider."""
    evals = [r for r in rows if r["suite"] == "eval"]
    if not evals:
        return []
    out = ["| preset | videos × views | provider | batch ms | host ms | videos/s | TFLOP/s | MFU | peak memory |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(evals, key=lambda r: (r["width"], -r["videos_per_s"])):
        mfu = "–" if r.get("mfu") is None else f"{100 * r['mfu']:.0f}%"
        mem = "–" if r["peak_mem_gb"] is None else f"{r['peak_mem_gb']:.2f} GB"
        out.append(f"| {r['width']} | {r['B']} × {r['views']} | {r['provider']} | {r['median_ms']:.1f} | "
                   f"{r['host_ms']:.1f} | {r['videos_per_s']:.1f} | {r['tflops']:.1f} | {mfu} | {mem} |")
    return out


def data_table(rows: list[dict]) -> list[str]:
    """The data pipeline: clips/s of one process, the decode limit, and the loader with its workers."""
    data = [r for r in rows if r["suite"] == "data"]
    if not data:
        return []
    out = ["| videos | version | sampling | clips/s, one process | decode limit | × the limit | loader clips/s "
           "(workers) |", "|---|---|---|---|---|---|---|"]
    for r in data:
        out.append(f"| {r['width']} | {r['version']} | {r['sampling']} | {r['per_process']:.1f} | "
                   f"{r['decode_limit']:.1f} | {r['vs_decode_limit']:.2f} | {r['loader']:.1f} ({r['workers']}) |")
    return out


def gop_table(rows: list[dict]) -> list[str]:
    """``prepare``'s keyframe interval: clips/s of one process and MB per minute of video, per GOP."""
    rows = [r for r in rows if r["suite"] == "data_gop"]
    if not rows:
        return []
    out = ["| source | sampling | GOP (frames) | clips/s, one process | MB per minute |", "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["width"], r["sampling"], r["gop"])):
        out.append(f"| {r['width']} | {r['sampling']} | {r['gop']} | {r['per_process']:.1f} | {r['mb_per_minute']:.1f} |")
    return out


def _step_checks(by_batch: dict[int, dict[str, dict]]) -> list[tuple]:
    """Issues 21 and 22's training-step targets where their rows were measured (vit-b16-k400 on a GPU)."""
    checks = []
    p32, p8 = by_batch.get(32, {}), by_batch.get(8, {})
    if "fused" in p32 and p32["fused"].get("mfu") is not None:
        checks += [("train step B=32: fused (uncaptured) clips/s", p32["fused"]["clips_per_s"], 335.0, True, "clips/s"),
                   ("train step B=32: fused (uncaptured) MFU", p32["fused"]["mfu"], 0.31, True, "%")]
        if p32["fused"]["peak_mem_gb"]:
            checks.append(("train step B=32: fused peak memory", p32["fused"]["peak_mem_gb"], 16.0, False, "GB"))
    fused = {k: r for k, r in p32.items() if k.startswith("fused") and r.get("mfu") is not None}
    if fused:
        best = max(fused.values(), key=lambda r: r["clips_per_s"])
        checks += [(f"train step B=32: best fused provider ({best['provider']}) clips/s", best["clips_per_s"], 400.0,
                    True, "clips/s"),
                   (f"train step B=32: best fused provider ({best['provider']}) MFU", best["mfu"], 0.37, True, "%")]
        if "eager+compile" in p32:
            checks.append((f"train step B=32: {best['provider']} over eager+compile",
                           best["clips_per_s"] / p32["eager+compile"]["clips_per_s"], 1.3, True, "×"))
    if "fused+graph" in p8 and p8["fused+graph"].get("mfu") is not None:
        checks += [("train step B=8: fused+graph step", p8["fused+graph"]["median_ms"], 30.0, False, "ms"),
                   ("train step B=8: fused+graph host time a step", p8["fused+graph"]["host_ms"], 0.5, False, "ms")]
    return checks


def targets_table(rows: list[dict]) -> list[str]:
    """The project's performance targets (the benchmarks issue), read off this card's rows."""
    ted = {r["provider"]: r for r in rows
           if r["suite"] == "ops" and r["op"] == "ted_adapter" and all(r[k] == v for k, v in HEADLINE.items())}
    by_batch: dict[int, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        if r["suite"] == "train_step":
            by_batch[r["B"]][r["provider"]] = r
    checks = []  # (what, measured, goal, higher is better, unit)
    if "fused" in ted:
        fused_ms = ted["fused"]["median_ms"]
        shape = "TED-Adapter fwd+bwd ({width}, B={B}, T={T}, {dtype})".format(**HEADLINE)
        for base, goal in (("eager", 3.0), ("compile-max", 1.5)):
            if base in ted:
                across = ted[base].get("call") != ted["fused"].get("call")
                checks.append((f"{shape}: speedup over {base}" + (" (measured in different calls)" if across else ""),
                               ted[base]["median_ms"] / fused_ms, goal, True, "×"))
        checks.append((f"{shape}: fraction of the roofline floor", ted["fused"]["fraction_of_floor"], 0.7, True, "%"))
    if "fused-graph" in ted and "eager-graph" in ted:  # as training runs it: replayed, device time alone
        checks.append(("TED-Adapter fwd+bwd replayed from CUDA graphs: fused-graph over eager-graph",
                       ted["eager-graph"]["median_ms"] / ted["fused-graph"]["median_ms"], 3.0, True, "×"))
    text = {r["provider"]: r for r in rows
            if r["suite"] == "ops" and r["op"] == "text_adapter" and all(r[k] == v for k, v in HEADLINE.items())}
    if "fused" in text and "compile-max" in text:
        checks.append(("text adapter fwd+bwd: speedup over compile-max",
                       text["compile-max"]["median_ms"] / text["fused"]["median_ms"], 1.2, True, "×"))
    complete = [b for b, p in by_batch.items() if {"fused", "eager", "full-finetune"} <= set(p)]
    if complete:
        batch = max(complete)
        p = by_batch[batch]
        fused, eager, full = p["fused"], p["eager"], p["full-finetune"]
        what = f"train step ({fused['width']}, B={batch})"
        checks.append((f"{what}: fused clips/s over eager adapters", fused["clips_per_s"] / eager["clips_per_s"],
                       1.3, True, "×"))
        checks.append((f"{what}: fused clips/s over full fine-tuning", fused["clips_per_s"] / full["clips_per_s"],
                       1.5, True, "×"))
        if fused["peak_mem_gb"] and full["peak_mem_gb"]:
            checks.append((f"{what}: fused peak memory / full fine-tuning's", fused["peak_mem_gb"] / full["peak_mem_gb"],
                           0.6, False, "%"))
    checks += _step_checks(by_batch)
    graphed = [r for r in rows if r["suite"] == "eval" and r["provider"] == "fused+graph" and r["views"] == 12]
    if graphed:
        checks.append((f"evaluation at 4×3 views ({graphed[0]['width']}): videos/s", graphed[0]["videos_per_s"], 95.0,
                       True, "videos/s"))
    if not checks:
        return []
    fmt = lambda v, unit: (f"{100 * v:.0f}%" if unit == "%" else f"{v:.2f}×" if unit == "×"  # noqa: E731
                           else f"{v:.3g} {unit}")
    out = ["| target | measured | goal | met |", "|---|---|---|---|"]
    for what, value, goal, higher, unit in checks:
        met = value >= goal if higher else value <= goal
        out.append(f"| {what} | {fmt(value, unit)} | {'≥' if higher else '≤'} {fmt(goal, unit)} | "
                   f"{'yes' if met else '**no**'} |")
    return out


def chart(result: dict, path: str) -> Optional[str]:
    """Speedup and % of roofline per op (headline shape), train-step clips/s and memory per provider."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    ops = defaultdict(dict)
    for r in rows:
        if r["suite"] == "ops" and all(r[k] == v for k, v in HEADLINE.items()):
            ops[r["op"]][r["provider"]] = r
    steps = [r for r in rows if r["suite"] == "train_step"]
    panels = [name for name, present in (("ops", ops), ("steps", steps)) if present]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "ops":
            names = sorted(op for op in ops if "fused" in ops[op])
            for i, base in enumerate(("eager", "compile-max")):
                vals = [ops[n][base]["median_ms"] / ops[n]["fused"]["median_ms"] if base in ops[n] else 0 for n in names]
                ax.bar([j + 0.4 * i for j in range(len(names))], vals, width=0.4, label=f"fused × {base}")
            roof = [100 * ops[n]["fused"]["fraction_of_floor"] for n in names]
            for j, v in enumerate(roof):
                ax.annotate(f"{v:.0f}% roof", (j + 0.2, 0), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
            ax.axhline(1.0, color="grey", lw=0.8)
            ax.set_xticks([j + 0.2 for j in range(len(names))], names, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel("speedup (×)")
            ax.set_title("fused ops, " + ", ".join(f"{k}={v}" for k, v in HEADLINE.items()), fontsize=9)
            ax.legend(fontsize=8)
        else:
            labels = [f"{r['provider']}\nB={r['B']}" for r in steps]
            ax.bar(labels, [r["clips_per_s"] for r in steps], color="tab:green")
            ax.set_ylabel("clips/s")
            ax.set_title(f"train step ({steps[0]['width']})", fontsize=9)
            mems = [r["peak_mem_gb"] for r in steps]
            if all(m is not None for m in mems):
                twin = ax.twinx()
                twin.plot(labels, mems, "o-", color="tab:red")
                twin.set_ylabel("peak memory (GB)")
            ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"{result['card']} — torch {result['torch']}, triton {result['triton']}, {result['date'][:10]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render(result: dict, image: Optional[str]) -> str:
    lines = [f"### {result['card']}", "",
             f"torch {result['torch']}, triton {result['triton']}, measured {result['date']}."]
    hw = result.get("hardware")
    if hw:
        lines.append(f"Measured ceilings: copy bandwidth {hw['bandwidth_gbs']:.0f} GB/s, matmul peak "
                     + ", ".join(f"{k} {v:.0f} TFLOP/s" for k, v in hw["peak_tflops"].items()) + ".")
    settings = {k: v for k, v in (result.get("settings") or {}).items() if v is not None}
    if settings:
        lines.append("Run settings: " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())) + ".")
    for call in result.get("calls", []):
        lines.append(f"Call {call['call']} (commit {call['commit']}, {call['date']}): {call['what']}.")
    lines.append("")
    if image:
        lines += [f"![benchmarks on {result['card']}]({image})", ""]
    parts = (result.get("profile") or {}).get("train_breakdown")
    if parts:
        total = sum(parts["ms"].values())
        lines += [f"Where the {parts['shape']} training step's time goes (`benchmarks/breakdown.py`, torch.profiler):",
                  "", "| component | ms a step | share |", "|---|---|---|"]
        lines += [f"| {name} | {ms:.2f} | {100 * ms / total:.0f}% |" for name, ms in parts["ms"].items()] + [""]
    tables = (targets_table(result["rows"]), train_table(result["rows"]), eval_table(result["rows"]),
              ops_table(result["rows"]), block_table(result["rows"]), gemms_table(result["rows"]),
              stencils_table(result["rows"]), data_table(result["rows"]), gop_table(result["rows"]))
    for table in tables:
        if table:
            lines += table + [""]
    return "\n".join(lines)


def render_static(result: dict, measured: dict[str, float]) -> str:
    """The static performance model's report (``benchmarks/results/static-sm90.json``), labelled predicted;
    ``measured``: fused TED-Adapter fwd+bwd ms per card at the same shape, to calibrate it."""
    hw = result["hardware"]
    ted = result["ops"][0]
    lines = ["### Predicted: static performance model, " + hw["name"], "",
             f"**Predicted, not measured** (`python -m benchmarks.static`, triton {result['triton']}, "
             f"{result['created'][:10]}): each kernel compiled ahead of time for sm_90 at its real specialisation; "
             f"per kernel the largest of HBM bytes / {hw['hbm_achieved'] / 1e12:.1f} TB/s, L2 bytes / "
             f"{hw['l2_achieved'] / 1e12:.0f} TB/s, FLOPs / {hw['bf16_achieved'] / 1e12:.0f} TFLOP/s (× pipeline fill, "
             f"÷ the share of SM time the grid keeps busy), SASS warp-instructions / {result['issue_rate'] / 1e12:.2f}·10¹² per s "
             f"(slowed below {hw['warps_for_full_issue']} resident warps a scheduler) and chains of dependent memory "
             f"waits, plus {hw['launch_us']:.0f} µs a kernel (`benchmarks/time_model.py`).", "",
             "| budget (issue 9) | value | budget | met |", "|---|---|---|---|"]
    for name, check in result["checks"].items():
        lines.append(f"| {name} | {check['value']:.3g} | {check['budget']:.3g} | {'yes' if check['met'] else '**no**'} |")
    lines += ["", "| op (bf16 unless named) | device kernels | HBM MB | predicted µs H100 | H200 | eager kernels | "
              "eager MB | eager floor µs |", "|---|---|---|---|---|---|---|---|"]
    for op in result["ops"]:
        lines.append(f"| {op['op']} | {op['device_kernels']} | {op['bytes'] / 1e6:.0f} | {op['predicted_us']:.0f} | "
                     f"{op.get('predicted_by_card', {}).get('H200', float('nan')):.0f} | "
                     f"{op['eager']['device_kernels']} | {op['eager']['bytes'] / 1e6:.0f} | "
                     f"{op['eager']['floor_us']:.0f} |")
    lines += ["", f"TED-Adapter fwd+bwd kernels ({ted['shape']['B']}×{ted['shape']['T']} clips, ViT-B/16, bf16; the "
              f"plan moves {ted['ideal_bytes'] / 1e6:.0f} MB):", "",
              "| kernel | tile | programs | per SM | regs | MB | L2 MB | memory µs | L2 µs | tensor µs | issue µs | "
              "predicted µs | bound |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k in ted["kernels"]:
        lines.append(f"| {k['name']} | {k['config']} | {k['programs']} | {k.get('ctas_per_sm', '-')} | {k['registers']} | "
                     f"{k['bytes'] / 1e6:.1f} | {k.get('l2_bytes', 0) / 1e6:.0f} | {k['memory_us']:.1f} | "
                     f"{k.get('l2_us', 0):.1f} | {k['compute_us']:.1f} | {k['issue_us']:.1f} | {k['predicted_us']:.1f} | "
                     f"{k['bound']} |")
    if ted.get("aten_kernels"):
        lines.append(f"Besides, {len(ted['aten_kernels'])} aten kernels ({', '.join(sorted(set(ted['aten_kernels'])))}) "
                     f"predicted {ted['aten_us']:.1f} µs together: a GEMM's FLOPs at cuBLAS's "
                     f"{CARDS['H100']['cublas_bf16'] / 1e12:.0f} TFLOP/s or its bytes at the HBM bandwidth, plus 1 µs "
                     "each.")
    split = Counter((g["slices"], round(g["predicted_us"], 1), round(g["unsplit_us"], 1))
                    for g in ted.get("split_k", []))
    lines += [f"Split-K weight-gradient GEMMs ({n} alike): {slices} slices predicted {us:.1f} µs each, one slice "
              f"{unsplit:.1f} µs." for (slices, us, unsplit), n in split.items()]
    lines += candidates_table(ted, result.get("candidates"))
    host = result["host"]
    lines += ["", f"Host time per TED-Adapter fwd+bwd (tiny shape, this CPU; Triton's dispatch runs for real on a stand-in "
              f"sm_90 driver, only the driver call is stubbed): fused {host['fused_us']:.0f} µs "
              f"({host['fused_triton_dispatch_us']:.0f} µs launching through Triton's own path), eager "
              f"{host['eager_us']:.0f} µs; {host['fast_launches']['launches']} launches compared with Triton's, "
              f"{len(host['fast_launches']['differing'])} differing. A trivial op's fwd+bwd: "
              + ", ".join(f"{k} {v:.0f} µs" for k, v in host["registration"].items()) + "."]
    lines += kept_activations_table(result.get("kept_activations"))
    for card, (ms, profile) in measured.items():
        lines.append(f"Measured on {card}: fused TED-Adapter fwd+bwd {1000 * ms:.0f} µs (do_bench: host and device "
                     "time, so not the kernels' prediction; per kernel below).")
        if profile:
            lines += calibration(ted, _plan_profiled(ted, result.get("candidates", {}), profile), card, profile)
    return "\n".join(lines)


def candidates_table(ted: dict, candidates: Optional[dict]) -> list[str]:
    """The TED-Adapter's six GEMMs three ways (ours, cuBLAS, the persistent TMA candidate), all predicted, and which
    library the op's weight gradients run on."""
    if not candidates or "ours_ted_us" not in candidates:
        return []
    ours, cublas, per_gemm = candidates["ours_ted_us"], candidates["cublas_ted_us"], candidates["persistent_gemm_ted_us"]
    tiles = sorted({t for us in per_gemm.values() for t in us})
    lines = ["", "The op's six GEMMs three ways on the augmented K (the biases rows of the output GEMM's operand), "
             "**predicted**: our Triton GEMM (the residual in its epilogue, split-K weight gradients), "
             f"cuBLAS (at the {CARDS['H100']['cublas_bf16'] / 1e12:.0f} TFLOP/s it reached on eager's GEMMs of these rows on the H100) "
             "and the persistent TMA candidate (`benchmarks/persistent_gemm.py`); "
             "`benchmarks/test_gemms.py` measures all three. The op runs its weight gradients (dW_out, dW_in) on "
             f"**{candidates['weight_grad_library']}** (`kernels.primitives.gemm.WEIGHT_GRAD_LIBRARY`) and the other four "
             f"on **{candidates.get('gemm_library', 'triton')}** (`kernels.ops.ted_adapter.GEMM_LIBRARY`):",
             "", "| GEMM | ours µs | cuBLAS µs | " + " | ".join(f"persistent {t} µs" for t in tiles) + " |",
             "|---|---|---|" + "---|" * len(tiles)]
    for name, us in per_gemm.items():
        lines.append(f"| {name} | {ours[name]:.1f} | {cublas[name]:.1f} | " + " | ".join(f"{us[t]:.1f}" for t in tiles)
                     + " |")
    return lines + [f"| all six | {sum(ours.values()):.1f} | {sum(cublas.values()):.1f} | "
                    + " | ".join(f"{sum(us[t] for us in per_gemm.values()):.1f}" for t in tiles) + " |"]


def render_step_trace(result: dict, measured: Optional[dict[str, list[dict]]] = None) -> str:
    """The whole step traced on fake tensors (``benchmarks/results/step-trace-sm90.json``), labelled predicted;
    ``measured``: each card's train-step rows, set beside the prediction."""
    lines = ["### Predicted: the whole step, traced", "",
             f"**Predicted, not measured** (`python -m benchmarks.step_trace`, torch {result['torch']}, "
             f"{result['created'][:10]}): one trainer step (losses with the cached class prefix, backward, clipping, "
             "AdamW) or one evaluation forward on fake tensors; every aten op or Triton launch that is not a view "
             "counts as a kernel, with the bytes of the distinct tensors it touches. Issue 21's budgets for the fused "
             "B=32 step: ≤ 900 kernels, ≤ 100 GB.", "",
             "| provider | pass | clips | device kernels | of them Triton | HBM GB | TFLOP | largest (kernels × GB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["traces"]:
        top = ", ".join(f"{k} {n}×{b / 1e9:.1f}" for k, (n, b, _) in list(r["by_op"].items())[:3])
        lines.append(f"| {r['provider']} | {'train step' if r['train'] else 'eval forward'} | {r['batch']} | "
                     f"{r['device_kernels']} | {r['triton_kernels']} | {r['bytes'] / 1e9:.1f} | {r['flops'] / 1e12:.2f} | "
                     f"{top} |")
    traces = result["traces"]
    return "\n".join(lines + step_roofline_table(traces) + step_measured_table(traces, measured or {}))


# The measured provider a traced one is compared with: the captured step where one was measured (the trace has no
# host time), else the step as issued from Python.
_MEASURED_AS = {"fused": ("fused+graph", "fused"), "eager": ("eager+graph", "eager"),
                "full-finetune": ("full-finetune",)}


def step_measured_table(traces: list[dict], measured: dict[str, list[dict]]) -> list[str]:
    """Measured / predicted for the traced training steps on each card that measured them."""
    lines = []
    for card, rows in measured.items():
        spec = _card_key(card)
        by = {(r["provider"], r["B"]): r for r in rows if r["suite"] == "train_step" and r["width"] == "vit-b16-k400"
              and r.get("host_ms") is not None}  # rows before issue 21 (no host time) timed an older step
        for t in traces:
            row = next((by[p, t["batch"]] for p in _MEASURED_AS.get(t["provider"], ()) if (p, t["batch"]) in by), None)
            if not t["train"] or spec is None or row is None or "roofline" not in t:
                continue
            if not lines:
                lines = ["", "Measured against predicted, the whole step (the measured step includes any host time "
                         "the GPU waited for; the captured providers have none):", "",
                         "| traced | B | card | measured provider | measured ms | predicted ms | measured / predicted |",
                         "|---|---|---|---|---|---|---|"]
            predicted = t["roofline"][spec]["ms"]
            lines.append(f"| {t['provider']} | {t['batch']} | {card} | {row['provider']} | {row['median_ms']:.1f} | "
                         f"{predicted:.1f} | {row['median_ms'] / predicted:.2f} |")
    return lines


def step_roofline_table(traces: list[dict]) -> list[str]:
    """The traced steps' device time by kind of kernel on each card, a roofline (``time_model.step_roofline``)."""
    if not all("roofline" in r for r in traces):
        return []
    from .time_model import CARDS, OTHER_KIND, STEP_KINDS, H100

    kinds = [k for k, _ in STEP_KINDS] + [OTHER_KIND]
    lines = ["", "The same steps' device time by kind of kernel, **predicted** as a roofline of the traced kernels "
             f"(each op's FLOPs at its kind's rate — cuBLAS {H100['cublas_bf16'] / 1e12:.0f}, our Triton GEMM "
             f"{H100['triton_gemm_bf16'] / 1e12:.0f}, attention {H100['attention_bf16'] / 1e12:.0f} TFLOP/s on the "
             f"H100 — or its bytes at {H100['hbm_achieved'] / 1e12:.1f} TB/s, whichever is longer, plus "
             f"{H100['launch_us']:.0f} µs a kernel; `benchmarks/time_model.py`); no host time (a captured step); "
             "MFU against the card's 8k-GEMM bf16 rate:", "",
             "| provider | pass | card | " + " | ".join(kinds) + " | ms | clips/s | MFU |",
             "|---|---|---|" + "---|" * (len(kinds) + 3)]
    for r in traces:
        for card in CARDS:
            roof = r["roofline"][card]
            cells = " | ".join(f"{roof['ms_by_kind'].get(k, 0.0):.1f}" for k in kinds)
            lines.append(f"| {r['provider']} | {'train step' if r['train'] else 'eval forward'} | {card} | {cells} | "
                         f"{roof['ms']:.1f} | {roof['clips_per_s']:.0f} | {roof['mfu']:.0%} |")
    return lines


def kept_activations_table(kept: Optional[dict]) -> list[str]:
    """What autograd keeps for the backward of a training forward, per provider (``benchmarks.static``)."""
    if not kept:
        return []
    lines = ["", f"Activations kept for the backward of one {kept['preset']} training forward ({kept['frames']} "
             "frames a clip, bf16 autocast; counted from the saved tensors on fake tensors, parameters excluded):", "",
             "| provider | MB a clip | MB a step besides |", "|---|---|---|"]
    for provider in ("fused", "eager", "full-finetune"):
        lines.append(f"| {provider} | {kept[provider]['per_clip']:.0f} | {kept[provider]['per_step']:.0f} |")
    return lines + [""]


def _plan_profiled(ted: dict, candidates: dict, profile: dict) -> dict:
    """The static plan a profile ran (``kernels``, ``aten_kernels``, ``predicted_by_card``), told by how many of
    our GEMMs it launched: today's (``ted``), or an earlier one the static model keeps (every GEMM ours: the
    H100's, before 975c315; the weight gradients on cuBLAS: the H200's of 2026-12-04)."""
    ours = sum(_launches(n) for n in profile["fused"]["kernels_us"] if n.split(" ")[0] == "gemm")
    for plan in (ted, *candidates.get("ted_earlier_plans", [])):
        if ours == sum(k["name"] == "gemm" for k in plan["kernels"]):
            return plan
    return ted


def _card_key(card: str) -> Optional[str]:
    """The time model's key (``"H100"``, ``"H200"``) of a card as a results file names it, or None."""
    return next((key for key, c in CARDS.items() if c["name"].split()[0] in card), None)


def _launches(name: str) -> int:
    """How many kernels a profile's row stands for: ``"gemm (6, mean)"`` is six."""
    many = re.search(r"\((\d+), mean\)$", name)
    return int(many.group(1)) if many else 1


def calibration(ted: dict, plan: dict, card: str, profile: dict) -> list[str]:
    """Measured / predicted per kernel (``profile`` from ``scripts/gpu_profile.py``, kept in the card's JSON): the
    time model (:mod:`benchmarks.time_model`) replayed on the features of the kernels that ran — ``plan``, the
    op as the profile ran it (:func:`_plan_profiled`), or for a kernel rewritten since, the measured version's
    (``profile["superseded"]``) — and the plan's library kernels together against the profile's."""
    profiled = plan["kernels"]
    fused = profile["fused"]
    card_key = _card_key(card) or "H100"
    spec = CARDS[card_key]
    superseded = profile.get("superseded", {}).get("kernels", {})
    features: dict[str, list[dict]] = defaultdict(list)
    for k in profiled:
        if k["name"] not in superseded:
            features[k["name"]].append(k)
    for name, k in superseded.items():
        features[name].append(k)
    rows = calibrate(fused["kernels_us"], features, spec)
    total = sum(r["predicted_us"] * _launches(r["kernel"]) for r in rows)
    library = {n: us for n, us in fused["kernels_us"].items() if n.split(" ")[0] not in features}
    if library and plan.get("aten_kernels"):  # the plan's library kernels ran too
        aten_us = plan["predicted_by_card"][card_key] - sum(timing(k, spec)["predicted_us"] for k in profiled)
        measured_us = sum(us * _launches(n) for n, us in library.items())
        rows.append(dict(kernel=f"cuBLAS ({sum(map(_launches, library))} kernels: "
                         + ", ".join(n.split("<")[0].removeprefix("void ") for n in library) + ")",
                         measured_us=measured_us, predicted_us=aten_us, ratio=measured_us / aten_us, bound="tensor"))
        total += aten_us
    lines = ["", f"On {card} ({'call ' if isinstance(profile['call'], int) else ''}{profile['call']}, {profile['shape']}): the kernels ran {fused['device_us']:.0f} µs "
             f"of device time against {total:.0f} µs predicted for them ({fused['device_us'] / total:.2f}×), and "
             f"issuing them took {fused['host_us']:.0f} µs of host time (eager: {profile['eager']['device_us']:.0f} µs "
             f"device, {profile['eager']['host_us']:.0f} µs host): the op is host-bound at this shape.", "",
             "| kernel | measured µs | predicted µs | measured / predicted | bound |", "|---|---|---|---|---|"]
    for r in rows:
        old = " (the version measured, since rewritten)" if r["kernel"] in superseded else ""
        lines.append(f"| {r['kernel']}{old} | {r['measured_us']:.1f} | {r['predicted_us']:.1f} | {r['ratio']:.2f} | "
                     f"{r['bound']} |")
    if superseded:
        now = ", ".join(f"{k['name']} {k['predicted_us']:.1f} µs" for k in ted["kernels"] if k["name"] in superseded)
        lines += ["", f"Rewritten since ({profile['superseded']['rewritten_in']}), predicted on the H100 and not "
                  f"measured on this card: {now}."]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--results", default=RESULTS_DIR, help="folder of <card>.json files")
    p.add_argument("--readme", help="README to update between the benchmark markers")
    args = p.parse_args(argv)
    sections, measured, static, step_trace, steps = [], {}, None, None, {}
    for path in sorted(glob.glob(os.path.join(args.results, "*.json"))):
        with open(path) as f:
            result = json.load(f)
        stem = os.path.splitext(path)[0]
        if os.path.basename(stem).startswith("static-"):
            static = (stem, result)
            continue
        if os.path.basename(stem).startswith("step-trace-"):
            step_trace = (stem, result)
            continue
        if "rows" not in result:  # not a results file of this suite (e.g. pytest-benchmark's own JSON)
            continue
        steps[result["card"]] = [r for r in result["rows"] if r["suite"] == "train_step"]
        for r in result["rows"]:
            if r["suite"] == "ops" and r["op"] == "ted_adapter" and r["provider"] == "fused" and \
                    all(r[k] == v for k, v in HEADLINE.items()):
                measured[result["card"]] = (r["median_ms"], result.get("profile"))
        image = chart(result, stem + ".png")
        text = render(result, None if image is None else os.path.relpath(image, os.path.dirname(args.readme or path)))
        with open(stem + ".md", "w") as f:
            f.write(text + "\n")
        sections.append(text)
        print(f"wrote {stem}.md" + (f" and {image}" if image else ""))
    if step_trace is not None:
        text = render_step_trace(step_trace[1], steps)
        with open(step_trace[0] + ".md", "w") as f:
            f.write(text + "\n")
        sections.insert(0, text)
        print(f"wrote {step_trace[0]}.md")
    if static is not None:
        text = render_static(static[1], measured)
        with open(static[0] + ".md", "w") as f:
            f.write(text + "\n")
        sections.insert(0, text)
        print(f"wrote {static[0]}.md")
    if args.readme:
        with open(args.readme) as f:
            readme = f.read()
        if START not in readme or END not in readme:
            raise SystemExit(f"{args.readme} has no {START} ... {END} markers")
        head, rest = readme.split(START, 1)
        tail = rest.split(END, 1)[1]
        body = "\n\n".join(sections) or "No results yet."
        with open(args.readme, "w") as f:
            f.write(f"{head}{START}\n{body}\n{END}{tail}")
        print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
