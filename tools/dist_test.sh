#!/usr/bin/env bash
# Distributed testing with torchrun:  tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR (and PORT) on every node, as for dist_train.sh.
set -euo pipefail
if [ "$#" -lt 3 ]; then
  echo "usage: $0 CONFIG CHECKPOINT GPUS_PER_NODE [tools/test.py options]" >&2
  exit 2
fi
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
exec bash "$TOOLS/dist_launch.sh" "$TOOLS/test.py" "$GPUS" "$CONFIG" "$CHECKPOINT" "$@"
