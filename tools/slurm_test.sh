#!/usr/bin/env bash
# Testing under Slurm (one task per GPU; MMEngine reads the SLURM_* variables):
#   GPUS=8 tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
# Environment: as tools/slurm_train.sh (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, PORT, SRUN_ARGS).
set -euo pipefail
[ "$#" -ge 4 ] || { echo "usage: GPUS=N $0 PARTITION JOB_NAME CONFIG CHECKPOINT [tools/test.py options]" >&2
                    exit 2; }
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$TOOLS/slurm_launch.sh" "$1" "$2" "$TOOLS/test.py" "${@:3}"
