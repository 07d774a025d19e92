#!/usr/bin/env bash
# Training under Slurm (one task per GPU; MMEngine reads the SLURM_* variables):
#   GPUS=8 tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py args...]
# Environment: GPUS (total, default 4), GPUS_PER_NODE (default min(GPUS, 8)),
# CPUS_PER_TASK (default 8), PORT (default 29500), SRUN_ARGS (extra srun options).
set -euo pipefail
[ "$#" -ge 3 ] || { echo "usage: GPUS=N $0 PARTITION JOB_NAME CONFIG [WORK_DIR] [tools/train.py options]" >&2
                    exit 2; }
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PARTITION=$1 JOB_NAME=$2 CONFIG=$3
shift 3
WORK_DIR_ARGS=()
if [ "$#" -gt 0 ] && [[ "$1" != -* ]]; then
  WORK_DIR_ARGS=(--work-dir "$1")
  shift
fi
exec bash "$TOOLS/slurm_launch.sh" "$PARTITION" "$JOB_NAME" "$TOOLS/train.py" "$CONFIG" \
    "${WORK_DIR_ARGS[@]}" "$@"
