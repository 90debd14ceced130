"""The static performance model (``python -m benchmarks.static``) holds the kernels to issue 9's budgets at
ViT-B/16, B=8, T=8, bf16 on sm_90 — without a GPU: every launch of one fwd+bwd traced, every kernel variant
compiled ahead of time for an H100 (the interpreter never runs the GPU compiler, so this also catches what
only it rejects), SASS read; and the activations a training forward keeps, counted. One subprocess without
TRITON_INTERPRET; about two and a half minutes. The budgets on wall-clock host time are ``timing`` tests (not in
the default run: a shared CPU's noise decides them); the rest count kernels, bytes, registers and driver calls."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The TED-Adapter fwd+bwd's library kernels in order: z; dW_out (batched over W_out's blocks), dW_in.
LIBRARY_KERNELS = ["mm", "addmm", "mm", "mm", "addmm", "mm"]  # z, out, dh, dW_aug, dx, dW_in


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("static") / "static-sm90.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.static", "--out", str(out)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


# Budgets the model says are missed, each held to no regression. Issue 9's host budget (fused ≤ 1/3 of eager):
# since the model runs Triton's real dispatch (it used to stub every launch, which hid ~45 µs a launch) it reads
# 0.23-0.37 here, and an H100 host measured 0.47 (benchmarks/results/NVIDIA_H100_80GB_HBM3.json, call 3); a
# wall-clock budget (timing). Issue 23's device targets, predicted for the H100: the stencils walk the frames, and
# each frame's dependent memory rounds (counted in their SASS) wait one after another, after their prologue's. On
# [16, 64] tiles a TD frame took 2 rounds forward and 4 backward (7 with fp32 parameters), what the H200 measured
# (21.4 and 84.9 µs against 23.4 and 61.8 predicted); on [16, 32] tiles every frame's loads issue together, one
# round a frame: 19.7 and 43.1 predicted. Both still miss their targets and their 2× memory floor (2.14), and with
# the GEMMs (26-40 µs each, L2-bound at their tiles) the op is above 220 µs (270).
KNOWN_MISSES = {"host time ≤ 1/3 of eager": 0.45, "stencil passes ≤ 2× memory floor": 2.2,
                "stencil_fwd ≤ 16 µs": 20.5, "stencil_bwd ≤ 25 µs": 45.0, "TED-Adapter fwd+bwd ≤ 220 µs": 266.0}
WALL_CLOCK = ("host time ≤ 1/3 of eager",)  # budgets decided by timing this machine


def test_every_budget_that_counts_is_met(report):
    checks = {name: c for name, c in report["checks"].items() if name not in KNOWN_MISSES}
    assert checks and not {name: c for name, c in checks.items() if not c["met"]}, checks


def test_known_misses_do_not_regress(report):
    for name, bound in KNOWN_MISSES.items():
        if name not in WALL_CLOCK:
            assert report["checks"][name]["value"] <= bound, (name, report["checks"][name])


@pytest.mark.timing
def test_host_time_budgets(report):
    for name in WALL_CLOCK:
        assert report["checks"][name]["value"] <= KNOWN_MISSES[name], (name, report["checks"][name])
    host = report["host"]
    assert host["fused_us"] < 0.65 * host["fused_triton_dispatch_us"], host  # the launcher: far less host time


def test_remembered_launches_pass_what_triton_passes(report):
    """kernels.launcher against Triton's own launch path, on a stand-in sm_90 driver: the same driver call for
    every launch of every fused op (fp32 and bf16)."""
    fast = report["host"]["fast_launches"]
    # 26: every launch of four ops at two shapes — TED-Adapter 3, text adapter 5, temporal adapter 3, QuickGELU 2
    # (the library GEMMs are cuBLAS calls, not Triton launches)
    assert fast["launches"] >= 26 and fast["differing"] == []


def test_ted_adapter_is_nine_launches_and_nothing_else(report):
    ted = report["ops"][0]
    names = [k["name"] for k in ted["kernels"]]
    # On cuBLAS, on the augmented K: z, the output GEMM (x its addend), dh, dW_aug (the bias gradients its rows), dx
    # (dout its addend), dW_in; no zero-fill, cast, copy or reduction. Ours: the two stencils and the partial sums.
    assert report["candidates"]["weight_grad_library"] == report["candidates"]["gemm_library"] == "cublas"
    assert ted["aten_kernels"] == LIBRARY_KERNELS, ted["aten_kernels"]
    assert "gemm" not in names and names.count("sum_partials") == 1 and ted["device_kernels"] == 9
    assert names.count("stencil_fwd") == names.count("stencil_bwd") == 1
    assert ted["eager"]["device_kernels"] > 3 * ted["device_kernels"]


def test_bf16_gemms_use_hopper_tensor_cores_with_a_pipelined_main_loop(report):
    for op in report["ops"]:
        if op["shape"]["dtype"] != "bfloat16":
            continue
        for k in op["kernels"]:
            if k["name"] == "gemm":
                m, n, kk = (int(v) for v in k["config"].split()[0].split("x"))
                assert k["wgmma"], (op["op"], k["config"])
                assert k["shared"] >= 2 * (m + n) * kk * 2, (op["op"], k["config"], k["shared"])


def test_tf32_gemms_round_their_operands_and_still_use_hopper_tensor_cores(report):
    """The TF32 variant's operand rounding (PTX inline asm, which the interpreter never sees) compiles for sm_90
    and keeps the warpgroup MMA in our GEMMs with every epilogue the text adapter fuses; the TED-Adapter's GEMMs are
    cuBLAS's (``torch.mm`` rounds to TF32 under the same PyTorch setting that picks our precision)."""
    text = next(op for op in report["ops"] if op["op"] == "text_adapter fwd+bwd fp32 tf32")
    gemms = [k for k in text["kernels"] if k["name"] == "gemm"]
    assert len(gemms) == 4 and all(k["wgmma"] and k["tf32_rounding"] and k["spills"] == 0 for k in gemms)
    op = next(op for op in report["ops"] if op["op"] == "ted_adapter fwd+bwd fp32 tf32")
    assert op["aten_kernels"] == LIBRARY_KERNELS, op["aten_kernels"]
    ieee = next(op for op in report["ops"] if op["op"] == "ted_adapter fwd+bwd fp32")
    assert not any(k["tf32_rounding"] for k in ieee["kernels"] + report["ops"][0]["kernels"])


def test_the_fused_path_keeps_fewer_activations_for_the_backward(report):
    """Fused QuickGELU keeps x alone (eager keeps σ too: 12 blocks × 197 tokens × 3072 × 8 frames × 2 bytes =
    116 MB a clip at ViT-B/16), and the fused TED-Adapter keeps x, z, h only."""
    kept = report["kept_activations"]
    assert kept["fused"]["per_clip"] < kept["eager"]["per_clip"] - 116 < kept["full-finetune"]["per_clip"]


def test_every_kernel_is_compiled_and_predicted_and_precision_moves_the_prediction(report):
    """Each kernel has SASS, registers and a positive prediction; and the prediction follows the work: the same
    op in IEEE fp32 (4-byte operands, no tensor cores) is predicted slower than under TF32, slower than bf16."""
    for op in report["ops"]:
        for k in op["kernels"]:
            assert k["predicted_us"] > 0 and k["sass_instructions"] > 0 and k["registers"] > 0, (op["op"], k)
    total = {op["op"]: op["predicted_us"] for op in report["ops"]}  # the library GEMMs' too
    assert total["ted_adapter fwd+bwd fp32"] > total["ted_adapter fwd+bwd fp32 tf32"] > total["ted_adapter fwd+bwd"]


def test_the_persistent_gemm_candidate_compiles_to_tma_and_warpgroup_mma(report):
    """benchmarks/persistent_gemm.py (measured against ours and cuBLAS in benchmarks/test_gemms.py): every tile
    size and operand layout the TED-Adapter's GEMMs need compiles for sm_90 with TMA loads, wgmma, no spill,
    within an SM's shared memory."""
    variants = report["candidates"]["persistent_gemm"]
    assert len(variants) == 6, variants
    for v in variants:
        assert v["wgmma"] and v["tma_loads"] > 0 and v["spills"] == 0 and v["shared"] <= 228 * 1024, v
