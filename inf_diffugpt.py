"""Quick start: unconditional and prefix-conditioned samples from a DiffuGPT checkpoint.

    python inf_diffugpt.py --model_name diffusionfamily/diffugpt-s --base_model_name gpt2
"""

import sys

from llamafactory.quickstart import DIFFUGPT, main

if __name__ == "__main__":
    sys.exit(main(DIFFUGPT))
