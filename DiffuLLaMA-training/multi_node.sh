#!/usr/bin/env bash
# Start run_distributed.sh on every node of the job, then wait for all of them.
#
#   bash multi_node.sh [extra train.py flags...]
#
# Inside a SLURM allocation: one `srun` task per node (SLURM provides the ranks).
# Otherwise: ssh into each host of HOSTFILE (default hostname.txt; line i is node rank i, line 0 the
# rank-0 node) and run `ENV_SETUP; cd WORKDIR; LAUNCH_PREFIX bash run_distributed.sh <rank>` there.
# The variables run_distributed.sh reads (MODEL, DATASET, OUTPUT_DIR, ...) are forwarded to every node.
# DiffuLLaMA-training/README.md documents all of them; DRY_RUN=1 prints the commands instead.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$SCRIPT_DIR"

FORWARDED=(HF_HOME HF_TOKEN HF_DATASETS_CACHE WANDB_API_KEY WANDB_PROJECT MASTER_ADDR MASTER_PORT GPUS_PER_NODE
    ACCELERATE_CONFIG MODEL DATASET DATA_CONFIG OUTPUT_DIR BATCH_SIZE GRAD_ACCUM MAX_STEPS LEARNING_RATE
    WARMUP_STEPS SEQ_LENGTH SEED PARALLEL_MODE SAVE_EVERY TRITON_LIBCUDA_PATH DRY_RUN)

run() {
    if [[ -n ${DRY_RUN:-} ]]; then
        printf '%q ' "$@"
        printf '\n'
    else
        "$@"
    fi
}

if [[ -n ${SLURM_JOB_NODELIST:-} ]]; then
    run srun --nodes "${SLURM_NNODES:-1}" --ntasks-per-node 1 bash "$SCRIPT_DIR/run_distributed.sh" "$@"
    exit
fi

HOSTFILE=${HOSTFILE:-hostname.txt}
WORKDIR=${WORKDIR:-$SCRIPT_DIR}
ENV_SETUP=${ENV_SETUP:-true}
LAUNCH_PREFIX=${LAUNCH_PREFIX:-}
SSH_OPTIONS=${SSH_OPTIONS:--o ConnectTimeout=10 -o BatchMode=yes}
[[ -f $HOSTFILE ]] || { echo "error: hostfile $HOSTFILE not found (one host per line, rank 0 first)" >&2; exit 2; }

exports="export HOSTFILE=$(printf '%q' "$HOSTFILE");"
for name in "${FORWARDED[@]}"; do
    if [[ -n ${!name:-} ]]; then
        exports+=" export $name=$(printf '%q' "${!name}");"
    fi
done
extra=$(printf '%q ' "$@")

rank=0
pids=()
hosts=()
while IFS= read -r host || [[ -n $host ]]; do
    [[ -n $host ]] || continue
    remote="$exports $ENV_SETUP; cd $(printf '%q' "$WORKDIR") && $LAUNCH_PREFIX bash run_distributed.sh $rank $extra"
    # shellcheck disable=SC2086  # SSH_OPTIONS is a list of options
    run ssh $SSH_OPTIONS "$host" "$remote" < /dev/null &
    pids+=($!)
    hosts+=("$host")
    rank=$((rank + 1))
done < "$HOSTFILE"

status=0
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
        echo "node ${hosts[$i]} (rank $i) failed" >&2
        status=1
    fi
done
exit $status
