"""Tokenize text corpora into TinyLlama packed files for train.py. ``python prepare_data.py --help``
lists the flags; the code is in ``diffullama_training/prepare.py``.
"""

import sys

from diffullama_training.prepare import main

if __name__ == "__main__":
    sys.exit(main())
