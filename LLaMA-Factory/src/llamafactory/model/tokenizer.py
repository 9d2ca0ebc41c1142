"""The tokenizer of a run and the token ids the stages need (docs/design.md#special-tokens).

The diffusion checkpoint's own tokenizer (``checkpoint_dir``) wins over the base model's. Diffusion stages
need a mask token: the tokenizer's, else the published table's. A base the table knows by its shape gets
the tokens the original loader gave it (GPT-2 medium: DiffuGPT-M's ``[¨M¨]`` at id 50257, pad ``¨``, sep
``======``); when nothing knows a mask token, one is added. Added tokens grow the embeddings.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from transformers import PreTrainedModel

from ..ddm import (
    SpecialTokens,
    add_known_tokens,
    add_mask_token,
    checkpoint_special_tokens,
    load_tokenizer,
)
from ..errors import UserInputError
from ..hparams import ModelArguments

logger = logging.getLogger(__name__)


def load_run_tokenizer(model_args: ModelArguments) -> Any:
    """Tokenizer of ``checkpoint_dir`` when it has one, else of ``model_name_or_path``; right padding."""
    source = model_args.checkpoint_dir or model_args.model_name_or_path
    tokenizer = load_tokenizer(source, fallback=model_args.model_name_or_path,
                               trust_remote_code=model_args.trust_remote_code)
    tokenizer.padding_side = "right"
    return tokenizer


def embedding_rows(model: PreTrainedModel) -> int:
    return int(model.get_input_embeddings().weight.shape[0])


@torch.no_grad()
def grow_embeddings(model: PreTrainedModel, size: int) -> None:
    """Resize the (tied) embeddings to ``size`` rows when the tokenizer has outgrown them.

    New rows start as the original's did: the mean of the old rows plus Gaussian noise of standard
    deviation ``1 / sqrt(hidden size)``, in the input embedding and in an untied output head.
    """
    old = embedding_rows(model)
    if size <= old:
        return
    logger.info("resizing the embeddings from %d to %d rows", old, size)
    model.resize_token_embeddings(size, mean_resizing=False)
    weights = {id(m.weight): m.weight for m in (model.get_input_embeddings(), model.get_output_embeddings())
               if m is not None}
    for weight in weights.values():
        noise = torch.randn_like(weight[old:]) / math.sqrt(weight.shape[1])
        weight[old:] = weight[:old].mean(dim=0, keepdim=True) + noise


def diffusion_special_tokens(tokenizer: Any, model: PreTrainedModel) -> SpecialTokens:
    """Mask / pad / sep / bos / eos ids; adds tokens (and rows) only where the tokenizer lacks them."""
    grow_embeddings(model, len(tokenizer))
    if add_known_tokens(tokenizer, model.config.model_type, embedding_rows(model), config=model.config):
        grow_embeddings(model, len(tokenizer))

    def resolve() -> SpecialTokens:
        return checkpoint_special_tokens(tokenizer, model.config, embedding_rows(model))

    try:
        return resolve()
    except UserInputError:
        if tokenizer.mask_token is not None or not add_mask_token(tokenizer):
            raise
    grow_embeddings(model, len(tokenizer))
    return resolve()

