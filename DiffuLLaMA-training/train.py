"""Adapt an autoregressive LLaMA into a diffusion LM (DiffuLLaMA): the entry point of
``accelerate launch ... train.py``. ``python train.py --help`` lists the flags; the code is in
``diffullama_training/``.
"""

import sys

from diffullama_training.run import main

if __name__ == "__main__":
    sys.exit(main())
