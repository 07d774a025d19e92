#!/usr/bin/env bash
# Tiny end-to-end demo (CPU, offline): set up the environment, train configs/icmsr_tiny_base.py,
# test it, super-resolve the demo images and compare with bicubic and the untrained model.
# Usage: bash tools/demo.sh [--work-dir DIR] [--iters N]
# The environment is tools/setup_env.sh's ($ICMSR_VENV, default .venv); set
# ICMSR_SKIP_SETUP=1 to use an environment you already have ($PYTHON, default python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ICMSR_VENV:-$ROOT/.venv}"
if [ "${ICMSR_SKIP_SETUP:-0}" = "1" ]; then
  PY="${PYTHON:-python3}"
  [ -x "$VENV/bin/python" ] && PY="$VENV/bin/python"
else
  bash "$ROOT/tools/setup_env.sh" "$VENV"
  PY="$VENV/bin/python"
fi
cd "$ROOT"
exec "$PY" tools/demo.py "$@"
