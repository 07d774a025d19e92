#!/usr/bin/env bash
# Distributed training with torchrun:  tools/dist_train.sh CONFIG GPUS [train.py args...]
# Multi-node: run on every node with NNODES, NODE_RANK, MASTER_ADDR (and PORT) set, e.g.
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 tools/dist_train.sh configs/icmsr_multi.py 4
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 tools/dist_train.sh configs/icmsr_multi.py 4
set -euo pipefail
[ "$#" -ge 2 ] || { echo "usage: $0 CONFIG GPUS_PER_NODE [tools/train.py options]" >&2; exit 2; }
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$TOOLS/dist_launch.sh" "$TOOLS/train.py" "$2" "$1" "${@:3}"
