#!/usr/bin/env bash
# The GPU checks as one command for a GPU machine with no network (an H100/H200), inside 9 minutes:
#   1. the kernel tests on the GPU, capped at 120 s (fp32 IEEE/TF32, bf16, fp16 parity; deterministic
#      backward; CUDA-graph capture and replay of a fused step; the fused model against eager; the
#      benchmark harness);
#   2. the benchmarks (not the data benchmark: the CPU's, with PyAV, which the image lacks), trimmed grid (M2CLIP_BENCH_QUICK=1) under a time budget, the target rows first, each
#      row written into $OUT as it finishes (a run that is killed keeps what it measured);
#   3. where the target row's time goes (scripts/gpu_profile.py: device vs host time, per kernel) and the fused
#      B=32 training step's time by component, stored in the card's JSON, and Nsight Compute's reading of the
#      TED-Adapter's stencil and partial-sum kernels (ncu.csv);
#   4. the report (tables, chart, measured / predicted per kernel against benchmarks/results/static-sm90.json).
# Installs nothing from the network: fetch the wheels here first (scripts/fetch_gpu_wheels.sh) and carry
# ".whl". Everything worth keeping lands in $OUT (8 files: at most 8 come back). On the device tool:
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=590)
# (2026-11-26 on an H100: the target row's six providers and the eight training-step rows took 297 s; the
# text-adapter row's six providers 48 s. The limits below sum to 555 s: run with timeout_s=590. 2026-12-04 on an
# H200: the tests 148 s, the target row, the GEMM comparison and seven training-step rows 234 s; the breakdown did
# not finish in 35 s, and Nsight Compute reached only stencil_fwd in 45 s.)
# Then copy $OUT's <card>.json/.md/.png into benchmarks/results/, run
# `python -m benchmarks.report --readme README.md` and commit. Device time left after one call (15 minutes in all, a
# start included) fits a second call only while the machine is still warm (30 s after the first returns), so have
# it ready: copy the first call's <card>.json into .gpu_done/ (git-ignored) and
#   run(command="PART=2 bash scripts/gpu_check.sh", carry=[".whl", ".gpu_done"], timeout_s=<what is left>)
# which runs only the benchmark rows the first call did not measure (M2CLIP_BENCH_CONTINUE) and returns the card's
# JSON with both calls' rows, each naming its call (2026-12-04: five more training-step rows in 206 s).
# Dry run here, on CPU (interpreter, CPU benchmark rows only): ALLOW_CPU=1 OUT=/tmp/out bash scripts/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
elif ! python3 -c "import open_clip" 2>/dev/null; then
  echo "open_clip is not installed here and .whl/ has no wheels: run scripts/fetch_gpu_wheels.sh on a machine" \
       "with a network first and carry .whl" | tee "$OUT/env.txt"
  exit 1
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, triton, open_clip; print('torch', torch.__version__, 'triton', triton.__version__,
      'open_clip', open_clip.__version__, 'cuda', torch.cuda.is_available())"; } 2>&1 | tee "$OUT/env.txt"
python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null || [ "${ALLOW_CPU:-0}" = 1 ] ||
  { echo "no CUDA device: stopping (ALLOW_CPU=1 dry-runs this script on CPU)" | tee -a "$OUT/env.txt"; exit 1; }

# Second call: the rows the first did not measure, under what is left of the lease; nothing else.
if [ "${PART:-1}" = 2 ]; then
  done_json=$(ls .gpu_done/*.json 2>/dev/null | head -1)
  [ -n "$done_json" ] || { echo "PART=2 needs the first call's <card>.json in .gpu_done/ (carry it)"; exit 1; }
  M2CLIP_BENCH_RESULTS="$OUT" M2CLIP_BENCH_QUICK=${M2CLIP_BENCH_QUICK:-1} M2CLIP_BENCH_CONTINUE="$done_json" \
    M2CLIP_BENCH_BUDGET_S=${M2CLIP_BENCH_BUDGET_S:-150} timeout "${BENCH_S:-200}" python3 -m pytest benchmarks/ \
    --benchmark-only -q -p no:cacheprovider --ignore benchmarks/test_data.py --benchmark-columns=median,rounds \
    2>&1 | tee "$OUT/bench2.log" | tail -30
  exit 0
fi

# 1. Kernel tests on the GPU (the static model, tests/test_static_model.py, is for machines without one), spread over
#    processes with pytest-xdist where installed: Triton compiles each kernel variant on first use.
#    (2026-11-26, H100, 16 cores, -n 8: 61 tests in 128 s.) Autotuning results are cached on disk for the later steps.
export TRITON_CACHE_AUTOTUNING=1
parallel=$(python3 -c "import xdist" 2>/dev/null && echo "-n 16")
#    Selected by marker: every test that needs CUDA or runs the kernels (tests/conftest.py marks those).
#    At the cap pytest gets SIGINT, so it still prints what passed and failed so far (2026-12-04, H200: 120 tests
#    in 148 s, the two fp32/fp16 TED parity tests at ViT-B/16 70 s each).
timeout -s INT -k 20 "${TESTS_S:-160}" python3 -m pytest -q -rfEs --durations=12 -p no:cacheprovider -p no:benchmark \
  -W ignore::DeprecationWarning $parallel -m "cuda or kernels" tests/ 2>&1 | tee "$OUT/tests.log"

# 2. Benchmarks: rows that would start after the budget skip; <card>.json in $OUT is rewritten after every row.
M2CLIP_BENCH_RESULTS="$OUT" M2CLIP_BENCH_QUICK=${M2CLIP_BENCH_QUICK:-1} M2CLIP_BENCH_BUDGET_S=${M2CLIP_BENCH_BUDGET_S:-190} \
  timeout "${BENCH_S:-250}" python3 -m pytest benchmarks/ --benchmark-only -q -p no:cacheprovider \
  --ignore benchmarks/test_data.py \
  --benchmark-columns=median,rounds 2>&1 | tee "$OUT/bench.log" | tail -40

# 3. Profile of the target row, stored in the card's JSON.
card_json=$(ls "$OUT"/*.json 2>/dev/null | head -1)
timeout "${PROFILE_S:-40}" python3 scripts/gpu_profile.py ted ${card_json:+--into "$card_json"} > "$OUT/profile.txt" 2>&1
grep -E "parity|==|stored" "$OUT/profile.txt"
#    The fused B=32 training step's time by component (issue 21), stored in the card's JSON too.
timeout "${BREAKDOWN_S:-60}" python3 scripts/gpu_profile.py breakdown ${card_json:+--into "$card_json"} \
  >> "$OUT/profile.txt" 2>&1

# 3b. Nsight Compute on the fused target row's stencils and partial sums (speed of light, occupancy, launch stats).
if command -v ncu >/dev/null; then
  # Three sections: with five, 50 s covered only three of the nine kernels (2026-11-26, two GEMMs and the old
  # stencil_fwd; those are in benchmarks/results/NVIDIA_H100_80GB_HBM3.ncu.csv). Now the backward stencil (its
  # [16, 32] tiles are new, 2026-12-06, and the [16, 64] one never had a reading) and sum_partials (2026-12-04:
  # stencil_fwd took the 45 s).
  timeout "${NCU_S:-45}" ncu --clock-control none --nvtx --nvtx-include "profile/" --kernel-name-base function \
    --kernel-name "regex:stencil_bwd|sum_partials" --section SpeedOfLight --section Occupancy \
    --section LaunchStats --csv --page details \
    --log-file "$OUT/ncu.csv" python3 scripts/gpu_profile.py ncu > /dev/null 2>&1
  echo "ncu: $(grep -c . "$OUT/ncu.csv" 2>/dev/null) lines in ncu.csv"
fi

# 4. Report for this card (beside the static prediction, for the measured / predicted ratio); the static
#    model's files are regenerated where the results are committed, so they do not come back.
cp benchmarks/results/static-sm90.json "$OUT/" 2>/dev/null
python3 -m benchmarks.report --results "$OUT" 2>&1 | tee -a "$OUT/bench.log"
rm -f "$OUT"/static-sm90.*
ls -la "$OUT"
