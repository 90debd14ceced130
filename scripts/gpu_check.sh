#!/usr/bin/env bash
# The GPU checks as one command for a GPU machine with no network (an H100/H200), about 7 minutes:
#   1. the kernel tests on the GPU (fp32 IEEE/TF32, bf16, fp16 parity; deterministic backward; the fused
#      model against eager; the benchmark harness);
#   2. the benchmarks, trimmed grid (M2CLIP_BENCH_QUICK=1) under a time budget; the target rows run first;
#   3. the report (tables, chart) from this card's results.
# Installs nothing from the network: fetch the wheels here first (scripts/fetch_gpu_wheels.sh) and carry
# ".whl". Everything worth keeping lands in $OUT (at most 8 files come back). On the device tool:
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=480)
# Dry run here, on CPU (interpreter, CPU benchmark rows only): ALLOW_CPU=1 OUT=/tmp/out bash scripts/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, triton, open_clip; print('torch', torch.__version__, 'triton', triton.__version__,
      'open_clip', open_clip.__version__, 'cuda', torch.cuda.is_available())"; } 2>&1 | tee "$OUT/env.txt"
python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null || [ "${ALLOW_CPU:-0}" = 1 ] ||
  { echo "no CUDA device: stopping (ALLOW_CPU=1 dry-runs this script on CPU)" | tee -a "$OUT/env.txt"; exit 1; }

# 1. Kernel tests on the GPU (the AOT sm_90 compile test is for machines without one), spread over
#    processes with pytest-xdist where installed: Triton compiles each kernel variant on first use.
parallel=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
timeout "${TESTS_S:-180}" python3 -m pytest -q -rs -p no:cacheprovider -W ignore::DeprecationWarning $parallel \
  tests/test_kernels.py tests/test_fused_model.py tests/test_benchmark_harness.py -k "not compiles_for_sm90" \
  2>&1 | tee "$OUT/tests.log"

# 2. Benchmarks: rows that would start after the budget skip; results are rewritten after every row.
rm -f benchmarks/results/*  # only this card's results come back
M2CLIP_BENCH_QUICK=${M2CLIP_BENCH_QUICK:-1} M2CLIP_BENCH_BUDGET_S=${M2CLIP_BENCH_BUDGET_S:-200} \
  timeout "${BENCH_S:-300}" python3 -m pytest benchmarks/ --benchmark-only -q -p no:cacheprovider \
  --benchmark-columns=median,rounds --benchmark-json "$OUT/pytest_benchmark.json" 2>&1 | tee "$OUT/bench.log" | tail -40

# 3. Report for this card, and the results to bring back.
python3 -m benchmarks.report 2>&1 | tee -a "$OUT/bench.log"
cp benchmarks/results/*.json benchmarks/results/*.md benchmarks/results/*.png "$OUT/" 2>/dev/null
ls -la "$OUT"
