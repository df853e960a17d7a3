#!/bin/bash
# Submit a met_vision job with its log in logs/ (created here first: Slurm opens --output before
# the job's first line runs, and a missing directory makes the job fail without a log).
#
#   docker/slurm/submit.sh docker/slurm/train-1node-4gpu.sbatch configs/resnet50-multilabel.yaml [overrides...]
#   MET_LOGS=/scratch/$USER/met-logs MET_SBATCH_ARGS="--time=2:00:00" docker/slurm/submit.sh ...
set -euo pipefail
SCRIPT=${1:?usage: $0 docker/slurm/<template>.sbatch configs/<name>.yaml [overrides...]}
shift
LOGS=${MET_LOGS:-$PWD/logs}
mkdir -p "$LOGS"
# shellcheck disable=SC2086  # MET_SBATCH_ARGS: extra sbatch options, split on spaces
exec sbatch --output="$LOGS/%x-%j.out" ${MET_SBATCH_ARGS:-} "$SCRIPT" "$@"
