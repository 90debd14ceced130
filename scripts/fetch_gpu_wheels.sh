#!/usr/bin/env bash
# Download, here, the wheels the device image lacks (it has torch, triton, einops, pytest,
# pytest-benchmark, timm) into .whl/ for scripts/gpu_check.sh. Run from the repository root.
set -euo pipefail
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux1_x86_64 --platform manylinux2010_x86_64)
for pkg in open_clip_torch ftfy wcwidth decord regex av safetensors; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plat[@]}" -d .whl "$pkg" || python3 -m pip download -q --no-deps -d .whl "$pkg"
done
ls -la .whl
