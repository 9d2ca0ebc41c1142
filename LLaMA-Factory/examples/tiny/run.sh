#!/usr/bin/env bash
# The whole DiffuGPT recipe in miniature, on CPU, offline:
#   synthetic corpus -> BPE tokenizer -> random tiny GPT-2 -> pt (AR) -> sft (AR baseline on reversal)
#   -> ddm (adaptation of the pt model) -> ddm-sft (reversal) -> AR vs diffusion evaluation + loss plots (example_output/) -> export in the Hugging Face-native format (assets/)
#
#   cd LLaMA-Factory && bash examples/tiny/run.sh          # full run, ~9 minutes on 2 CPU cores (example_output/pipeline.log has the measured time)
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
SFT_LENGTH=24  # cutoff_len of sft and ddm-sft: bos, "reverse", 6 letters, "gives", sep, 6 letters, eos, padding
if [[ "${TINY_QUICK:-0}" == 1 ]]; then
  OUTPUT=${TINY_OUTPUT:-$WORK/example_output}
  ASSET=${TINY_ASSET:-$WORK/diffugpt-tiny}
  CORPUS=(--corpus-size 3000 --sft-size 600 --test-size 100)
  PT_KEYS=(max_steps=300 logging_steps=50)
  DDM_KEYS=(max_steps=600 anneal_steps=50 logging_steps=100)
  SFT_KEYS=(max_steps=30 logging_steps=5)
  AR_SFT_KEYS=(max_steps=30 logging_steps=5)
  EVAL_STEPS=1,n
else  # the step counts of the configs
  OUTPUT=${TINY_OUTPUT:-../example_output}
  ASSET=${TINY_ASSET:-../assets/diffugpt-tiny}
  CORPUS=() PT_KEYS=() AR_SFT_KEYS=() DDM_KEYS=() SFT_KEYS=()
  EVAL_STEPS=1,4,16,n
fi

source "$PIPELINE/steps.sh"  # stage, final_lines, logged

train() {  # train CONFIG OUTPUT_NAME [key=value ...]
  local config=$1 out=$2
  shift 2
  llamafactory-cli train "$PIPELINE/configs/$config.yaml" dataset_dir="$WORK/data" output_dir="$WORK/$out" \
    seed="$SEED" "$@"
}

quick_start() {  # the README's first command on the exported model, run from the repository root, then with a corpus prompt
  local asset
  asset=$(python -c 'import os, sys; print(os.path.relpath(sys.argv[1], ".."))' "$ASSET")
  local command=(python inf_diffugpt.py --model_name "$asset")
  {
    echo "\$ ${command[*]}"
    (cd .. && "${command[@]}")
    echo "\$ ${command[*]} --prompt 'the capital of'"
    (cd .. && "${command[@]}" --prompt "the capital of")
  } 2>&1 | tee >(final_lines > "$OUTPUT/inf_diffugpt.log")
}

pipeline() {
  stage "synthetic corpus" python "$PIPELINE/synthetic.py" --out "$WORK/data" --seed "$SEED" "${CORPUS[@]}"
  stage "tokenizer" python "$PIPELINE/train_tokenizer.py" --corpus "$WORK/data/tiny_corpus.jsonl" --out "$WORK/tokenizer"
  stage "initial model" python "$PIPELINE/init_model.py" --tokenizer "$WORK/tokenizer" --out "$WORK/init" --seed "$SEED"
  stage "pt" train pt pt model_name_or_path="$WORK/init" "${PT_KEYS[@]}"
  stage "sft (AR baseline)" train sft sft model_name_or_path="$WORK/pt" cutoff_len="$SFT_LENGTH" "${AR_SFT_KEYS[@]}"
  stage "ddm" train ddm ddm model_name_or_path="$WORK/pt" "${DDM_KEYS[@]}"
  stage "ddm-sft" train ddm_sft ddm-sft model_name_or_path="$WORK/pt" checkpoint_dir="$WORK/ddm" \
    cutoff_len="$SFT_LENGTH" "${SFT_KEYS[@]}"
  stage "evaluation" python "$PIPELINE/compare.py" --data "$WORK/data" --ar "$WORK/pt" --ar-sft "$WORK/sft" --diffusion "$WORK/ddm" \
    --sft "$WORK/ddm-sft" --sft-length "$SFT_LENGTH" --steps "$EVAL_STEPS" --out "$OUTPUT"
  stage "loss plots" python "$PIPELINE/plots.py" --stage pt="$WORK/pt" --stage sft="$WORK/sft" \
    --stage ddm="$WORK/ddm" --stage ddm-sft="$WORK/ddm-sft" --out "$OUTPUT"
  stage "export" python "$PIPELINE/export.py" --checkpoint "$WORK/ddm" --out "$ASSET"
  if [[ -f ../inf_diffugpt.py ]]; then
    stage "quick start" quick_start
  fi
  echo "pipeline finished in $SECONDS s: results in $OUTPUT/results.md, model in $ASSET"
}

mkdir -p "$OUTPUT"
logged "$OUTPUT/pipeline.log" pipeline
