#!/usr/bin/env bash
# Distributed testing with torchrun:  tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR (and PORT) on every node, as for dist_train.sh.
set -euo pipefail
[ "$#" -ge 3 ] || { echo "usage: $0 CONFIG CHECKPOINT GPUS_PER_NODE [tools/test.py options]" >&2
                    exit 2; }
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$TOOLS/dist_launch.sh" "$TOOLS/test.py" "$3" "$1" "$2" "${@:4}"
