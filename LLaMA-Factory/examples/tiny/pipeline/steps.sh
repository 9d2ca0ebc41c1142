# Shared by the example pipelines' run.sh (sourced): timed steps, and logs without progress-bar redraws.

stage() {  # stage NAME COMMAND...: run one step and report its wall time
  local name=$1 start=$SECONDS
  shift
  echo "=== ${name}"
  "$@"
  echo "=== ${name}: $((SECONDS - start)) s"
}

final_lines() {  # final_lines [FILE...]: the text with only the final state of each progress bar
  sed -u 's/.*\r//' "$@"
}

logged() {  # logged LOG COMMAND...: run COMMAND, showing all its output; LOG keeps it without redraws
  local log=$1
  shift
  "$@" 2>&1 | tee /dev/stderr | final_lines > "$log"
}
