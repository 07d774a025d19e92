#!/usr/bin/env bash
# Put the pure-Python wheels that the device machine lacks into .gpu_wheels/ (ignored by git).
#
# The device machine has its own Python with PyTorch (CUDA), transformers, peft, timm and
# tensorboard, but no package index. This script downloads, here, the wheels the toolkit
# needs beyond those - at the versions installed in this environment, so the device runs
# what the tests ran - and checks that each is pure Python ("none-any") and that the
# folder stays under 64 MiB. On the device (docs/performance.md):
#   python -m pip install --no-deps --no-index --target .gpu_site .gpu_wheels/*.whl
#   PYTHONPATH=.gpu_site python tools/benchmarks/gpu_suite.py
#
# Usage: tools/benchmarks/gpu_wheels.sh [OUT_DIR]     (PYTHON=... picks the interpreter)
# WITH_BITSANDBYTES=1 also fetches bitsandbytes (41 MiB, Linux x86-64, any Python 3) for the
# 8-bit AdamW cases; the folder then holds about 58 MiB.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:-$ROOT/.gpu_wheels}"
PYTHON="${PYTHON:-python}"
LIMIT_MIB=64
# Toolkit dependencies absent on the device, then their pure-Python requirements that a
# bare PyTorch + transformers install does not bring.
PACKAGES=(diffusers mmengine mmcv-lite lpips pyiqa addict yapf termcolor rich markdown-it-py
          mdurl pygments platformdirs einops requests urllib3 certifi idna)
SDIST_ONLY=(basicsr)   # published as a source archive only: built into a wheel here

pinned() {  # NAME==VERSION as installed here, else NAME
  "$PYTHON" - "$1" <<'PY'
import importlib.metadata as md, sys
try:
    print(f'{sys.argv[1]}=={md.version(sys.argv[1])}')
except md.PackageNotFoundError:
    print(sys.argv[1])
PY
}

mkdir -p "$OUT"
specs=()
for name in "${PACKAGES[@]}"; do specs+=("$(pinned "$name")"); done
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$OUT" "${specs[@]}"
if [ "${WITH_BITSANDBYTES:-0}" = 1 ]; then
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
      --platform manylinux_2_24_x86_64 -d "$OUT" "$(pinned bitsandbytes)"
fi
for name in "${SDIST_ONLY[@]}"; do
  "$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation -w "$OUT" "$(pinned "$name")"
done

status=0
for wheel in "$OUT"/*; do
  case "$wheel" in
    *-none-any.whl) ;;
    */bitsandbytes-*-py3-none-manylinux*.whl) ;;  # CUDA libraries inside, no Python ABI
    *) echo "not a pure-Python wheel: $wheel" >&2; status=1 ;;
  esac
done
total=$(du -sb "$OUT" | cut -f1)
ls -l "$OUT"
echo "total: $((total / 1024)) KiB in $OUT (limit ${LIMIT_MIB} MiB)"
if [ "$total" -ge $((LIMIT_MIB * 1024 * 1024)) ]; then
  echo "over ${LIMIT_MIB} MiB: the device run cannot carry these wheels" >&2
  status=1
fi
exit $status
