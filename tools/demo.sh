#!/usr/bin/env bash
# Tiny end-to-end demo (CPU, offline): train configs/icmsr_tiny.py, test it, super-resolve.
# Usage: bash tools/demo.sh [--work-dir DIR] [--iters N]
# Uses the virtual environment of tools/setup_env.sh ($ICMSR_VENV, default .venv) when
# present, else $PYTHON (default python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ICMSR_VENV:-$ROOT/.venv}"
if [ -x "$VENV/bin/python" ]; then
  PY="$VENV/bin/python"
else
  PY="${PYTHON:-python3}"
fi
cd "$ROOT"
exec "$PY" tools/demo.py "$@"
