#!/usr/bin/env bash
# Start train.py on THIS node through `accelerate launch` (DeepSpeed ZeRO-3 + CPU offload by default).
#
#   bash run_distributed.sh [NODE_RANK] [extra train.py flags...]
#
# Node layout, first match wins:
#   * SLURM (SLURM_JOB_NODELIST set): rank-0 host, node count and this node's rank come from SLURM;
#   * a hostfile (HOSTFILE, default hostname.txt: one host per line, the first is rank 0) and
#     NODE_RANK (the first argument, or the NODE_RANK variable);
#   * neither: a single node.
# Every setting below is an environment variable with a default; DiffuLLaMA-training/README.md lists them.
# DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
    NODE_RANK=$1
    shift
fi

HOSTFILE=${HOSTFILE:-hostname.txt}
if [[ -n ${SLURM_JOB_NODELIST:-} ]]; then
    MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
    NNODES=${SLURM_NNODES:-${SLURM_JOB_NUM_NODES:-1}}
    NODE_RANK=${SLURM_NODEID:-${NODE_RANK:-0}}
elif [[ -f $HOSTFILE ]]; then
    MASTER_ADDR=${MASTER_ADDR:-$(head -n 1 "$HOSTFILE")}
    NNODES=$(grep -c . "$HOSTFILE")
    NODE_RANK=${NODE_RANK:?"pass this node's rank (0 = first line of $HOSTFILE) as the first argument"}
else
    MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
    NNODES=1
    NODE_RANK=${NODE_RANK:-0}
fi
MASTER_PORT=${MASTER_PORT:-29500}
if [[ -z ${GPUS_PER_NODE:-} ]]; then
    GPUS_PER_NODE=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
    [[ $GPUS_PER_NODE -gt 0 ]] || GPUS_PER_NODE=1
fi
if [[ $NNODES -gt 1 ]]; then
    ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-accelerate_configs/multi_node.yaml}
else
    ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-accelerate_configs/single_node.yaml}
fi

MODEL=${MODEL:-meta-llama/Llama-2-7b-hf}
DATASET=${DATASET:-data/slim_star_combined}
DATA_CONFIG=${DATA_CONFIG:-train_slim:0.693584,train_star:0.306416}
OUTPUT_DIR=${OUTPUT_DIR:-output/7B_diffusion}
BATCH_SIZE=${BATCH_SIZE:-60}
GRAD_ACCUM=${GRAD_ACCUM:-4}
MAX_STEPS=${MAX_STEPS:-20000}
LEARNING_RATE=${LEARNING_RATE:-2e-5}  # what the published run trained at (see README: "the published run")
WARMUP_STEPS=${WARMUP_STEPS:-0}
SEQ_LENGTH=${SEQ_LENGTH:-2048}
SEED=${SEED:-2829}
PARALLEL_MODE=${PARALLEL_MODE:-data_parallel}
SAVE_EVERY=${SAVE_EVERY:-500}

export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-1}

command=(
    accelerate launch
    --config_file "$ACCELERATE_CONFIG"
    --main_process_ip "$MASTER_ADDR"
    --main_process_port "$MASTER_PORT"
    --machine_rank "$NODE_RANK"
    --num_machines "$NNODES"
    --num_processes "$((GPUS_PER_NODE * NNODES))"
    train.py
    --model "$MODEL"
    --dataset "$DATASET"
    --data-config "$DATA_CONFIG"
    --output-dir "$OUTPUT_DIR"
    --batch-size "$BATCH_SIZE"
    --gradient-accumulate-every "$GRAD_ACCUM"
    --max-train-steps "$MAX_STEPS"
    --learning-rate "$LEARNING_RATE"
    --warmup-steps "$WARMUP_STEPS"
    --seq-length "$SEQ_LENGTH"
    --seed "$SEED"
    --parallel_mode "$PARALLEL_MODE"
    --save-every "$SAVE_EVERY"
    --resume
)
if [[ -n ${WANDB_PROJECT:-} ]]; then
    command+=(--wandb "$WANDB_PROJECT")
fi
command+=("$@")

if [[ -n ${DRY_RUN:-} ]]; then
    printf '%q ' "${command[@]}"
    printf '\n'
else
    exec "${command[@]}"
fi
