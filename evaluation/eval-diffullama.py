r"""Evaluate a DiffuLLaMA checkpoint on the paper's benchmarks (see evaluation/README.md).

    python evaluation/eval-diffullama.py --model_name diffusionfamily/diffullama --flash_attn sdpa \
        --data_dir data/eval
"""

import sys

from dlm_eval.cli import DIFFULLAMA, main

if __name__ == "__main__":
    sys.exit(main(DIFFULLAMA))
