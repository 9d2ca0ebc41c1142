"""Compatibility entry point of the original attention patch.

The original replaced transformers' mask preparation so that GPT-2 / LLaMA could attend in both
directions and accept annealing masks. transformers 5 does both natively (``config.is_causal = False``
and 4D float masks passed through), so nothing is patched: the function only checks the installed
version and leaves every library object untouched.
"""

from __future__ import annotations

import logging

import transformers

logger = logging.getLogger(__name__)


def replace_attention_mask() -> None:
    """Kept for old scripts; makes no global change (use ``llamafactory.ddm.make_bidirectional``)."""
    major = int(transformers.__version__.split(".")[0])
    if major < 5:
        raise RuntimeError(
            f"transformers {transformers.__version__} is installed; this project needs transformers >= 5, "
            "where bidirectional attention needs no patch"
        )
    logger.debug("replace_attention_mask(): nothing to patch with transformers %s", transformers.__version__)
