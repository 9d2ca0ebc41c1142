"""The tokenizer of a run and the token ids the stages need (docs/design.md#special-tokens).

The diffusion checkpoint's own tokenizer (``checkpoint_dir``) wins over the base model's. Diffusion stages
need a mask token: the tokenizer's, else the published table's; only when neither knows one is a mask
token added (and the embeddings grown to match).
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import PreTrainedModel

from ..data import FramingTokens
from ..ddm import SpecialTokens, add_mask_token, load_tokenizer, recorded_mask_id, resolve_special_tokens
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


def grow_embeddings(model: PreTrainedModel, size: int) -> None:
    """Resize the (tied) embeddings to ``size`` rows when the tokenizer has outgrown them."""
    if size > embedding_rows(model):
        logger.info("resizing the embeddings from %d to %d rows", embedding_rows(model), size)
        model.resize_token_embeddings(size)


def diffusion_special_tokens(tokenizer: Any, model: PreTrainedModel) -> SpecialTokens:
    """Mask / pad / sep / bos / eos ids; adds a mask token (and rows) only when none is known."""
    grow_embeddings(model, len(tokenizer))
    recorded = recorded_mask_id(model.config)
    try:
        return resolve_special_tokens(tokenizer, model.config.model_type, embedding_rows(model), recorded)
    except UserInputError:
        if tokenizer.mask_token is not None or not add_mask_token(tokenizer):
            raise
    grow_embeddings(model, len(tokenizer))
    return resolve_special_tokens(tokenizer, model.config.model_type, embedding_rows(model), recorded)


def _first(*candidates: int | None) -> int | None:
    return next((c for c in candidates if c is not None), None)


def framing_tokens(tokenizer: Any, special: SpecialTokens | None = None) -> FramingTokens:
    """BOS / EOS / PAD / SEP for building sequences: the diffusion ids first, then the tokenizer's, then EOS."""
    eos = _first(special and special.eos_id, tokenizer.eos_token_id)
    if eos is None:
        raise UserInputError("the tokenizer has no eos token; sequences cannot be terminated")
    sep = _first(special and special.sep_id, tokenizer.sep_token_id)
    if sep is None:
        logger.info("no separator token known: using eos (id %d) between prompt and response", eos)
    return FramingTokens(
        bos=_first(special and special.bos_id, tokenizer.bos_token_id, eos),
        eos=eos,
        pad=_first(special and special.pad_id, tokenizer.pad_token_id, eos),
        sep=_first(sep, eos),
    )
