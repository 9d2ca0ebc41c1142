"""Compatibility entry point of the original ``attention_patch.py``: ``replace_attention_mask``.

The original replaced the forwards of transformers 4's ``GPT2Model``, ``LlamaModel`` and
``LlamaFlashAttention2`` (its ``forward_gpt2``, ``forward_llama2``, ``forward_llama2fa2``) so that the models
used the 4D attention mask the caller passed (full attention, or an annealing mask) instead of building a
causal one. transformers 5 does both without a patch: a model whose config says ``is_causal = False``
attends in both directions under eager, sdpa and flash_attention_2, and a 4D float mask is used as given.
So the switch is per model, not global: ``replace_attention_mask(model, ...)`` applies
``llamafactory.ddm.make_bidirectional`` to each model it is given. Called with no model, as the original
scripts call it at import time, it only checks that transformers is new enough, and changes no library
object; the replacement forwards themselves have no counterpart (they would override transformers 5's own).
"""

from __future__ import annotations

import logging

import torch
import transformers

from llamafactory.ddm import make_bidirectional

logger = logging.getLogger(__name__)


def replace_attention_mask(*models: torch.nn.Module) -> None:
    """Switch ``models`` to full attention in place (``make_bidirectional``); no global change is made."""
    major = int(transformers.__version__.split(".")[0])
    if major < 5:
        raise RuntimeError(
            f"transformers {transformers.__version__} is installed; this project needs transformers >= 5, "
            "where bidirectional attention needs no patch"
        )
    for model in models:
        make_bidirectional(model)
    if not models:
        logger.debug("replace_attention_mask(): no model given; with transformers %s nothing global is patched "
                     "(pass the models, or call llamafactory.ddm.make_bidirectional on them)", transformers.__version__)
