#!/usr/bin/env bash
# Download, here, the wheels that scripts/gpu_check.sh needs and the device image lacks (it has torch,
# triton, einops, timm, torchvision, huggingface_hub, safetensors, regex, tqdm, pytest, pytest-benchmark,
# matplotlib) into .whl/ (git-ignored through .git/info/exclude). Run from the repository root.
set -euo pipefail
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
# Pure-Python or abi3 wheels: the same file serves the device's Python 3.12.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
  "open_clip_torch==3.3.0" "ftfy==6.3.1" wcwidth
ls -la .whl
