#!/usr/bin/env bash
# The GPU checks owed by the kernels, training and benchmark issues, as one command for a lent H100/H200
# (see DEVELOPERS.md "GPU work"). Installs nothing from the network: packages the device image lacks
# travel as wheels in .whl/ (fetch them here with scripts/fetch_gpu_wheels.sh, carry ".whl").
# Writes logs and JSON to $OUT. Budget: about 8 minutes.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"

# 1. CUDA parity and determinism tests (bf16/fp16/fp32), ~1 min.
timeout 180 python3 -m pytest -q tests/test_kernels.py -k cuda 2>&1 | tee "$OUT/cuda_tests.log"

# 2. Benchmarks, trimmed grid (ViT-B/16, B=8, T=8; all providers), ~4 min. Results JSON -> $OUT.
M2CLIP_BENCH_QUICK=1 timeout 300 python3 -m pytest benchmarks/ --benchmark-only -q -x \
  --benchmark-json "$OUT/pytest_benchmark.json" 2>&1 | tail -60 | tee "$OUT/bench.log"
cp benchmarks/results/*.json "$OUT/" 2>/dev/null

# 3. Training throughput: vit-b16-k400 (random weights), 224-px generated videos, fused vs eager.
python3 - <<'PY'
from m2clip_fast.data.synthetic import make_synthetic_dataset
make_synthetic_dataset("/tmp/syn224", train_per_class=64, val_per_class=2, num_frames=16, size=224)
PY
for mode in fused eager; do
  flag=$([ $mode = fused ] && echo --use-fused)
  timeout 150 python3 train.py --train-list /tmp/syn224/train.txt --data-root /tmp/syn224 \
    --classes /tmp/syn224/classes.csv --preset vit-b16-k400 --num-frames 8 --sampling-rate 2 --batch-size 32 \
    --epochs 100 --max-steps 60 --log-interval 20 --workers 12 --views 1x1 --output-dir /tmp/run-$mode $flag \
    > "$OUT/train_$mode.log" 2>&1
  grep '"split": "train"' /tmp/run-$mode/metrics.jsonl > "$OUT/train_$mode.jsonl"
done
ls -la "$OUT"
