"""Evaluate an autoregressive baseline on the paper's benchmarks (see evaluation/README.md).

    python evaluation/eval-llm.py --model_name gpt2 --data_dir data/eval
"""

import sys

from dlm_eval.cli import LLM, main

if __name__ == "__main__":
    sys.exit(main(LLM))
