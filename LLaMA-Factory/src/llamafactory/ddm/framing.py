"""The ids that frame a token sequence: BOS, EOS, PAD and SEP (docs/design.md#special-tokens).

One lookup for everything that builds sequences (the training stages' processors, the evaluation engines,
the examples), so a prompt is framed the same way in training and in evaluation: the diffusion
checkpoint's ids first, then the tokenizer's, then EOS for any that neither has.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..errors import UserInputError
from .tokens import SpecialTokens

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FramingTokens:
    """Ids that frame a sequence (``framing_tokens`` fills gaps with EOS)."""

    bos: int
    eos: int
    pad: int
    sep: int


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
