#!/usr/bin/env bash
# The whole DiffuGPT recipe in miniature, on CPU, offline:
#   synthetic corpus -> BPE tokenizer -> random tiny GPT-2 -> pt (AR) -> ddm (adaptation) -> ddm-sft (reversal)
#   -> AR vs diffusion evaluation + loss plots (example_output/) -> export in the DiffuGPT Hub layout (assets/)
#
#   cd LLaMA-Factory && bash examples/tiny/run.sh          # full run, about 10 minutes on 2 CPU cores
#   TINY_QUICK=1 bash examples/tiny/run.sh                 # shortened version (CI); writes only under TINY_WORK
#
# Environment (all optional):
#   TINY_SEED    seed of the corpus, the initial weights, training noise and data order (default 0)
#   TINY_WORK    work folder for data, tokenizer and checkpoints (default output/tiny-pipeline)
#   TINY_OUTPUT  folder for results.md, loss plots and logs (default ../example_output; quick: $TINY_WORK/example_output)
#   TINY_ASSET   folder of the exported model (default ../assets/diffugpt-tiny; quick: $TINY_WORK/diffugpt-tiny)
#   TINY_QUICK   1 = fewer records, steps and test items
set -euo pipefail
cd "$(dirname "$0")/../.."  # LLaMA-Factory/

export WANDB_MODE=disabled HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
SEED=${TINY_SEED:-0}
WORK=${TINY_WORK:-output/tiny-pipeline}
PIPELINE=examples/tiny/pipeline
SFT_LENGTH=24  # cutoff_len of ddm-sft: "<s> reverse + 6 letters <sep> 6 letters </s>" and padding
if [[ "${TINY_QUICK:-0}" == 1 ]]; then
  OUTPUT=${TINY_OUTPUT:-$WORK/example_output}
  ASSET=${TINY_ASSET:-$WORK/diffugpt-tiny}
  CORPUS=(--corpus-size 3000 --sft-size 600 --test-size 30)
  PT_STEPS=30 DDM_STEPS=40 ANNEAL=10 SFT_STEPS=30 EVAL_STEPS=1,n
else
  OUTPUT=${TINY_OUTPUT:-../example_output}
  ASSET=${TINY_ASSET:-../assets/diffugpt-tiny}
  CORPUS=()
  PT_STEPS=400 DDM_STEPS=600 ANNEAL=100 SFT_STEPS=300 EVAL_STEPS=1,4,16,n
fi

stage() {  # stage NAME COMMAND...: run one step and report its wall time
  local name=$1 start=$SECONDS
  shift
  echo "=== ${name}"
  "$@"
  echo "=== ${name}: $((SECONDS - start)) s"
}

train() {  # train CONFIG OUTPUT_NAME [key=value ...]
  local config=$1 out=$2
  shift 2
  llamafactory-cli train "$PIPELINE/configs/$config.yaml" dataset_dir="$WORK/data" output_dir="$WORK/$out" \
    seed="$SEED" "$@"
}

quick_start() {  # the README's first command on the exported model, then with a prompt from the corpus
  local command=(python ../inf_diffugpt.py --model_name "$ASSET" --seed "$SEED" --device cpu)
  {
    echo "\$ ${command[*]}"
    "${command[@]}"
    echo "\$ ${command[*]} --prompt 'the capital of'"
    "${command[@]}" --prompt "the capital of"
  } 2>&1 | tee >(sed -u 's/.*\r//' > "$OUTPUT/inf_diffugpt.log")
}

pipeline() {
  stage "synthetic corpus" python "$PIPELINE/synthetic.py" --out "$WORK/data" --seed "$SEED" "${CORPUS[@]}"
  stage "tokenizer" python "$PIPELINE/train_tokenizer.py" --corpus "$WORK/data/tiny_corpus.jsonl" --out "$WORK/tokenizer"
  stage "initial model" python "$PIPELINE/init_model.py" --tokenizer "$WORK/tokenizer" --out "$WORK/init" --seed "$SEED"
  stage "pt" train pt pt model_name_or_path="$WORK/init" max_steps="$PT_STEPS"
  stage "ddm" train ddm ddm model_name_or_path="$WORK/pt" max_steps="$DDM_STEPS" anneal_steps="$ANNEAL"
  stage "ddm-sft" train ddm_sft ddm-sft model_name_or_path="$WORK/pt" checkpoint_dir="$WORK/ddm" \
    max_steps="$SFT_STEPS" cutoff_len="$SFT_LENGTH"
  stage "evaluation" python "$PIPELINE/compare.py" --data "$WORK/data" --ar "$WORK/pt" --diffusion "$WORK/ddm" \
    --sft "$WORK/ddm-sft" --sft-length "$SFT_LENGTH" --steps "$EVAL_STEPS" --out "$OUTPUT"
  stage "loss plots" python "$PIPELINE/plots.py" --stage pt="$WORK/pt" --stage ddm="$WORK/ddm" \
    --stage ddm-sft="$WORK/ddm-sft" --out "$OUTPUT"
  stage "export" python "$PIPELINE/export.py" --checkpoint "$WORK/ddm" --out "$ASSET"
  if [[ -f ../inf_diffugpt.py ]]; then
    stage "quick start" quick_start
  fi
  echo "pipeline finished in $SECONDS s: results in $OUTPUT/results.md, model in $ASSET"
}

mkdir -p "$OUTPUT"
# the log keeps only the final state of each progress bar
pipeline 2>&1 | tee /dev/stderr | sed -u 's/.*\r//' > "$OUTPUT/pipeline.log"
