#!/usr/bin/env bash
# Set up the environment (if needed) and run the test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ICMSR_VENV:-$ROOT/.venv}"
bash "$ROOT/tools/setup_env.sh" "$VENV"
cd "$ROOT"
"$VENV/bin/python" -m pytest -q tests "$@"
