#!/usr/bin/env bash
# The paper's central claim in miniature, on real text: for the same diffusion-training compute, does
# adapting an AR model (shift + attention-mask annealing + continual pre-training) give a better diffusion
# model than training one from scratch, and what do the shift and the annealing each buy?
#
#   text -> documents split train / held-out -> BPE tokenizer -> random GPT-2 -> pt, N steps (the AR base)
#   ddm from the AR base, M steps each: shift + annealing (the paper's recipe) | no annealing | no shift
#   ddm from the random GPT-2: M steps | N + M steps (the total compute of the adapted model)
#   block diffusion from the AR base, M steps each, the recipe's shift and annealing: B = 4 | B = 16
#   -> held-out NLL bound, infilling, generation quality -> results.md / results.json / plots / pipeline.log
#
#   cd LLaMA-Factory && MINI_TEXT=/path/to/text.txt bash examples/mini_paper/run.sh   # local text, offline
#   cd LLaMA-Factory && bash examples/mini_paper/run.sh        # WikiText-2 from the Hugging Face Hub (online)
#   MINI_QUICK=1 MINI_TEXT=... bash examples/mini_paper/run.sh # shortened run (tests); writes only under MINI_WORK
#
# Environment (all optional):
#   MINI_TEXT    a UTF-8 text file or a folder of .txt files (default: Salesforce/wikitext, wikitext-2-raw-v1)
#   MINI_SEED    seed of the split, initial weights, data order, diffusion noise and sampling (default 0)
#   MINI_WORK    work folder: data, tokenizer, checkpoints, per-job logs (default output/mini-paper)
#   MINI_OUTPUT  results folder (default ../example_output/mini_paper; quick: $MINI_WORK/example_output)
#   MINI_JOBS    jobs run at once, one CPU thread each (default 2, for 2 cores)
#   MINI_QUICK   1 = a tiny model, a few steps per stage, a few test items
set -euo pipefail
cd "$(dirname "$0")/../.."  # LLaMA-Factory/

export WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
COMMAND="bash examples/mini_paper/run.sh"
SEED=${MINI_SEED:-0}
WORK=${MINI_WORK:-output/mini-paper}
JOBS=${MINI_JOBS:-2}
HERE=examples/mini_paper
TINY=examples/tiny/pipeline
LOGS=$WORK/logs

config_value() {  # config_value CONFIG KEY: a key of one of this pipeline's configs
  python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))[sys.argv[2]])' "$HERE/configs/$1.yaml" "$2"
}

if [[ "${MINI_QUICK:-0}" == 1 ]]; then
  OUTPUT=${MINI_OUTPUT:-$WORK/example_output}
  TEXT_ARGS=(--doc-chars 400 --valid-chars 1500)
  TOKENIZER_ARGS=(--vocab-size 512 --max-length 32)
  MODEL_ARGS=(--n-embd 32 --n-layer 2 --n-head 2 --n-positions 32)
  LENGTH=32
  AR_STEPS=8 DIFFUSION_STEPS=6 ANNEAL_STEPS=3
  COMMON_KEYS=(cutoff_len=$LENGTH per_device_train_batch_size=4 warmup_steps=2 logging_steps=2 eval_steps=3)
  EVAL_ARGS=(--length $LENGTH --windows 8 --levels 4 --spans 6 --context 8 --samples 4 --prompt-tokens 8)
else
  OUTPUT=${MINI_OUTPUT:-../example_output/mini_paper}
  TEXT_ARGS=() COMMON_KEYS=() EVAL_ARGS=()
  TOKENIZER_ARGS=(--vocab-size 4096 --max-length 128)
  MODEL_ARGS=(--n-embd 128 --n-layer 4 --n-head 4 --n-positions 128)
  AR_STEPS=$(config_value pt max_steps)
  DIFFUSION_STEPS=$(config_value ddm max_steps)
  ANNEAL_STEPS=$(config_value ddm anneal_steps)
fi
SCRATCH_STEPS=$((AR_STEPS + DIFFUSION_STEPS))

source "$TINY/steps.sh"  # stage, final_lines, logged (shared with the tiny pipeline)

train() {  # train CONFIG OUTPUT_NAME [key=value ...]
  local config=$1 out=$2
  shift 2
  llamafactory-cli train "$HERE/configs/$config.yaml" dataset_dir="$WORK/data" tokenized_path="$WORK/tokenized" \
    output_dir="$WORK/$out" seed="$SEED" "${COMMON_KEYS[@]}" "$@"
}

measure() {  # measure NAME [measure.py options]: measure one model on the held-out documents
  local name=$1
  shift
  python "$HERE/measure.py" --ar "$WORK/pt" --data "$WORK/data" --seed "$SEED" --name "$name" \
    --out "$WORK/eval/$name.json" "${EVAL_ARGS[@]}" "$@"
}

# The job queue: every job names the jobs it needs; run_queue starts jobs in this order as soon as their
# prerequisites are done, at most JOBS at a time. Each job logs to $LOGS/NAME.log, shown when it ends.
declare -a ORDER=()
declare -A NEEDS=() COMMANDS=()

job() {  # job NAME "PREREQUISITES" COMMAND...
  local name=$1
  ORDER+=("$name")
  NEEDS[$name]=$2
  shift 2
  COMMANDS[$name]=$(printf '%q ' "$@")
}

diffusion_run() {  # diffusion_run NAME INIT(pt|init) SHIFT ANNEAL_STEPS STEPS [key=value ...]: one ddm run and its evaluation
  local name=$1 init=$2 shift_=$3 anneal=$4 steps=$5 needs=""
  shift 5
  [[ $init == pt ]] && needs=pt
  job "$name" "$needs" train ddm "$name" model_name_or_path="$WORK/$init" shift="$shift_" anneal_steps="$anneal" \
    max_steps="$steps" "$@"
  job "eval-$name" "pt $name" measure "$name" --diffusion "$WORK/$name" --shift "$shift_" --init "$init" \
    --anneal-steps "$anneal"
}

run_queue() {
  local -A state=() pid_of=() started=()
  local running=0 name need ready pid status
  while true; do
    for name in "${ORDER[@]}"; do
      (( running < JOBS )) || break
      [[ -z ${state[$name]:-} ]] || continue
      ready=1
      for need in ${NEEDS[$name]}; do [[ ${state[$need]:-} == done ]] || ready=0; done
      (( ready )) || continue
      echo "=== start ${name}"
      ( eval "${COMMANDS[$name]}" ) > "$LOGS/$name.log" 2>&1 &
      pid_of[$!]=$name state[$name]=running started[$name]=$SECONDS
      running=$((running + 1))
    done
    (( running > 0 )) || break
    status=0
    wait -n -p pid || status=$?
    name=${pid_of[$pid]}
    running=$((running - 1))
    final_lines "$LOGS/$name.log"
    if (( status != 0 )); then
      echo "=== ${name} failed (exit ${status}); its log: $LOGS/$name.log" >&2
      for pid in "${!pid_of[@]}"; do
        [[ ${state[${pid_of[$pid]}]} == running ]] && kill "$pid" 2>/dev/null
      done
      return "$status"
    fi
    state[$name]=done
    echo "=== ${name}: $((SECONDS - started[$name])) s"
  done
  for name in "${ORDER[@]}"; do
    [[ ${state[$name]:-} == done ]] || { echo "=== ${name} never became ready" >&2; return 1; }
  done
}

pipeline() {
  echo "=== command: ${COMMAND}"
  echo "=== MINI_TEXT=${MINI_TEXT:-(unset: the Hub default)} MINI_SEED=${SEED} MINI_JOBS=${JOBS} MINI_QUICK=${MINI_QUICK:-0}"
  echo "=== started $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(nproc --all) CPU cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "=== N = ${AR_STEPS} AR steps, M = ${DIFFUSION_STEPS} diffusion steps (annealing ${ANNEAL_STEPS}), scratch N + M = ${SCRATCH_STEPS}"
  local text_source=()
  [[ -n ${MINI_TEXT:-} ]] && text_source=(--text "$MINI_TEXT")
  stage "text" python "$HERE/prepare_text.py" --out "$WORK/data" --seed "$SEED" "${text_source[@]}" "${TEXT_ARGS[@]}"
  stage "tokenizer" python "$TINY/train_tokenizer.py" --corpus "$WORK/data/train.jsonl" --out "$WORK/tokenizer" \
    "${TOKENIZER_ARGS[@]}"
  stage "initial model" python "$TINY/init_model.py" --tokenizer "$WORK/tokenizer" --out "$WORK/init" --seed "$SEED" \
    "${MODEL_ARGS[@]}"
  rm -rf "$WORK/tokenized"
  stage "tokenise" train tokenize tokenize model_name_or_path="$WORK/init"

  mkdir -p "$LOGS" "$WORK/eval"
  job pt "" train pt pt model_name_or_path="$WORK/init" max_steps="$AR_STEPS"
  diffusion_run ddm-scratch-long init true 1 "$SCRATCH_STEPS"
  diffusion_run ddm-adapted pt true "$ANNEAL_STEPS" "$DIFFUSION_STEPS"
  diffusion_run ddm-block4 pt true "$ANNEAL_STEPS" "$DIFFUSION_STEPS" block_size=4
  diffusion_run ddm-block16 pt true "$ANNEAL_STEPS" "$DIFFUSION_STEPS" block_size=16
  diffusion_run ddm-no-anneal pt true 1 "$DIFFUSION_STEPS"
  diffusion_run ddm-no-shift pt false "$ANNEAL_STEPS" "$DIFFUSION_STEPS"
  diffusion_run ddm-scratch init true 1 "$DIFFUSION_STEPS"
  job eval-ar pt measure ar --init init
  stage "training and evaluation (${JOBS} at a time)" run_queue

  local evals=()
  for name in ar ddm-adapted ddm-no-anneal ddm-no-shift ddm-scratch ddm-scratch-long ddm-block4 ddm-block16; do
    evals+=("$WORK/eval/$name.json")
  done
  stage "report" python "$HERE/report.py" --eval "${evals[@]}" --source "$WORK/data/source.json" --seed "$SEED" \
    --command "$COMMAND" --seconds "$SECONDS" --out "$OUTPUT"
  echo "pipeline finished in $SECONDS s: results in $OUTPUT/results.md"
}

mkdir -p "$OUTPUT" "$WORK"
logged "$OUTPUT/pipeline.log" pipeline
