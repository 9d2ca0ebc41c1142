r"""Evaluate a DiffuGPT checkpoint on the paper's benchmarks (see evaluation/README.md).

    python evaluation/eval-diffugpt.py --model_name diffusionfamily/diffugpt-s --base_model_name gpt2 \
        --data_dir data/eval
"""

import sys

from dlm_eval.cli import DIFFUGPT, main

if __name__ == "__main__":
    sys.exit(main(DIFFUGPT))
