"""Quick start: unconditional and prefix-conditioned samples from a DiffuLLaMA checkpoint.

    python inf_diffullama.py --model_name diffusionfamily/diffullama --flash_attn flash_attention_2
"""

import sys

from llamafactory.quickstart import DIFFULLAMA, main

if __name__ == "__main__":
    sys.exit(main(DIFFULLAMA))
