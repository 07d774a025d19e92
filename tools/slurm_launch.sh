#!/usr/bin/env bash
# srun launcher shared by slurm_train.sh and slurm_test.sh (one task per GPU;
# MMEngine reads the SLURM_* variables):
#   tools/slurm_launch.sh PARTITION JOB_NAME SCRIPT [SCRIPT args...]
# Environment: GPUS (total, default 4), GPUS_PER_NODE (default min(GPUS, 8)),
# CPUS_PER_TASK (default 8), PORT (default 29500), SRUN_ARGS (extra srun options).
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
SCRIPT=$3
shift 3
GPUS=${GPUS:-4}
GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
CPUS_PER_TASK=${CPUS_PER_TASK:-8}
SRUN_ARGS=${SRUN_ARGS:-""}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export MASTER_PORT=${PORT:-29500}

# shellcheck disable=SC2086
PYTHONPATH="$ROOT:${PYTHONPATH:-}" \
exec srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "${PYTHON:-python}" -u "$SCRIPT" "$@" --launcher slurm
