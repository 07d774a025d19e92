#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install icmsr with its test and metric extras.
# Usage: bash tools/setup_env.sh [VENV_DIR]        (default: .venv in the repository root)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${ICMSR_VENV:-$ROOT/.venv}}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade pip 'setuptools<81' wheel
# torch and torchvision first, as a matched pair, so no other package pulls a different build.
$PIP install --quiet 'torch==2.14.1' 'torchvision==0.29.1'
$PIP install --quiet -e "$ROOT[tests,metrics]"
"$VENV/bin/python" -c "import icmsr, torch; print('[setup] icmsr', icmsr.__version__, 'torch', torch.__version__)"
