"""Special tokens of diffusion LMs: the checkpoint's own tokenizer first, then the published table.

The released models reuse or add tokens for mask / pad / separator (docs/design.md#special-tokens). A model without a known
mask token must fail loudly: silently masking with id 0 trains and samples garbage.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UserInputError

logger = logging.getLogger(__name__)

DEFAULT_MASK_TOKEN = "[¨M¨]"


@dataclass(frozen=True)
class SpecialTokens:
    """Token ids the diffusion math needs; ``mask_id`` is required, the rest may be unknown."""

    mask_id: int
    pad_id: int | None = None
    sep_id: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None

    @property
    def end_ids(self) -> frozenset[int]:
        """Ids that end a free-length answer: EOS, and PAD, which ddm-sft trains as the filler after an answer."""
        return frozenset(i for i in (self.eos_id, self.pad_id) if i is not None)


@dataclass(frozen=True)
class KnownModel:
    """A released model's special tokens, and how to recognise the model or the AR model it was adapted from.

    ``vocab_size`` is the released checkpoint's embedding rows. When the tokens differ between models of one
    architecture by more than that (DiffuGPT-M vs DiffuGPT-S), ``base_shape`` = (hidden size, layers) and
    ``base_vocab_size`` recognise the AR base, and ``added_tokens`` are what the original loader set on the
    base tokenizer (role -> token string; a string new to the vocabulary is added at its end).
    """

    name: str
    model_type: str
    vocab_size: int
    mask_id: int
    pad_id: int | None
    sep_id: int | None
    base_shape: tuple[int, int] | None = None
    base_vocab_size: int | None = None
    added_tokens: tuple[tuple[str, str], ...] = ()

    def matches(self, model_type: str, vocab_size: int, shape: tuple[int, int] | None) -> bool:
        if model_type != self.model_type or (shape is not None and self.base_shape not in (None, shape)):
            return False
        return vocab_size == self.vocab_size or (shape is not None and shape == self.base_shape
                                                 and vocab_size == self.base_vocab_size)


# docs/design.md#special-tokens. DiffuGPT-M first: the GPT-2 medium shape (or its 50258 rows) tells it from
# DiffuGPT-S, whose tokens the original gave every other GPT-2.
KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("diffugpt-m", "gpt2", 50258, mask_id=50257, pad_id=101, sep_id=50155, base_shape=(1024, 24),
               base_vocab_size=50257,
               added_tokens=(("pad_token", "¨"), ("sep_token", "======"), ("mask_token", DEFAULT_MASK_TOKEN))),
    KnownModel("diffugpt-s", "gpt2", 50257, mask_id=10541, pad_id=None, sep_id=50155),
    KnownModel("diffullama", "llama", 32000, mask_id=811, pad_id=30399, sep_id=4936),
)


def model_shape(config: Any) -> tuple[int, int] | None:
    """``(hidden size, layers)`` of a transformers config (GPT-2's ``n_embd`` / ``n_layer`` map to these)."""
    hidden, layers = getattr(config, "hidden_size", None), getattr(config, "num_hidden_layers", None)
    return (int(hidden), int(layers)) if hidden is not None and layers is not None else None


def _token_id(tokenizer: Any, attribute: str) -> int | None:
    """Id of a tokenizer's named special token (``mask_token``...), or None when it has none."""
    if tokenizer is None or getattr(tokenizer, attribute, None) is None:
        return None
    token_id = getattr(tokenizer, f"{attribute}_id", None)
    return int(token_id) if token_id is not None else None


def _lookup_id(tokenizer: Any, token: str) -> int | None:
    """Id of a literal token string in the tokenizer's vocabulary, or None when absent."""
    if tokenizer is None:
        return None
    token_id = tokenizer.convert_tokens_to_ids(token)
    unk = getattr(tokenizer, "unk_token_id", None)
    return None if token_id is None or (unk is not None and token_id == unk) else int(token_id)


def known_model(model_type: str, vocab_size: int, config: Any = None) -> KnownModel | None:
    """The released model with this architecture and embedding size (or adapted from this base), if any.

    Without ``config`` the shape is unknown: only the released checkpoints' embedding sizes are recognised.
    """
    shape = model_shape(config) if config is not None else None
    return next((entry for entry in KNOWN_MODELS if entry.matches(model_type, vocab_size, shape)), None)


def add_known_tokens(tokenizer: Any, model_type: str, vocab_size: int, *, config: Any = None) -> bool:
    """Set the special tokens the original loader gave the base tokenizer of a released model (DiffuGPT-M from
    GPT-2 medium: pad ``¨``, sep ``======``, mask ``[¨M¨]`` added as a new id). Roles the tokenizer already
    fills are kept. Returns True when the vocabulary grew: the caller then resizes the embeddings."""
    entry = known_model(model_type, vocab_size, config)
    if entry is None or not entry.added_tokens or getattr(tokenizer, "mask_token", None) is not None:
        return False
    size = len(tokenizer)
    missing = {role: token for role, token in entry.added_tokens if getattr(tokenizer, role, None) is None}
    tokenizer.add_special_tokens(missing)
    logger.info("%s tokens for this %s model: %s", entry.name, model_type, missing)
    return len(tokenizer) > size


def resolve_special_tokens(tokenizer: Any, model_type: str, vocab_size: int, *, config: Any = None,
                           recorded_mask_id: int | None = None) -> SpecialTokens:
    """Special token ids for a model: tokenizer files win, the published table (docs/design.md#special-tokens) fills the gaps.

    ``config`` (the model's) lets the table recognise a model by the shape of its AR base (DiffuGPT-M); the
    config of a Hugging Face-native export records the pad and separator ids itself.
    ``recorded_mask_id`` (the mask id a checkpoint's config records, ``recorded_mask_id(config)``) comes
    before the tokenizer's. Raises UserInputError when no mask token is known, rather than guessing one.
    """
    table = known_model(model_type, vocab_size, config)
    mask_id = recorded_mask_id if recorded_mask_id is not None else _token_id(tokenizer, "mask_token")
    if mask_id is None:
        mask_id = _lookup_id(tokenizer, DEFAULT_MASK_TOKEN)
    if mask_id is None and table is not None:
        mask_id = table.mask_id
    if mask_id is None:
        raise UserInputError(
            f"no mask token is known for this {model_type} model (vocabulary {vocab_size}): its tokenizer "
            f"defines no mask_token and it is not one of the released models "
            f"({', '.join(m.name for m in KNOWN_MODELS)}); add a mask token to the tokenizer "
            f"(e.g. tokenizer.add_special_tokens({{'mask_token': '{DEFAULT_MASK_TOKEN}'}}))"
        )
    pad_id = _token_id(tokenizer, "pad_token")
    sep_id = _token_id(tokenizer, "sep_token")
    if table is not None:
        pad_id = pad_id if pad_id is not None else table.pad_id
        sep_id = sep_id if sep_id is not None else table.sep_id
    if getattr(config, "records_special_tokens", False):  # a Hugging Face-native export's config.json
        pad_id = pad_id if pad_id is not None else config.pad_token_id
        sep_id = sep_id if sep_id is not None else config.sep_token_id
    bos_id = _token_id(tokenizer, "bos_token")
    eos_id = _token_id(tokenizer, "eos_token")
    if mask_id >= vocab_size:
        raise UserInputError(
            f"mask token id {mask_id} is outside the model's embedding table of {vocab_size} rows; "
            "resize the embeddings after adding the token"
        )
    return SpecialTokens(mask_id=mask_id, pad_id=pad_id, sep_id=sep_id, bos_id=bos_id, eos_id=eos_id)


def add_mask_token(tokenizer: Any, token: str = DEFAULT_MASK_TOKEN) -> bool:
    """Give a tokenizer without a mask token one; returns True when the vocabulary grew.

    The caller must then resize the model's embeddings to ``len(tokenizer)``.
    """
    if tokenizer.mask_token is not None:
        return False
    added = tokenizer.add_special_tokens({"mask_token": token})
    logger.info("added mask token %r as id %d", token, tokenizer.mask_token_id)
    return added > 0


def start_token_id(tokenizer: Any) -> int:
    """The token a generated sequence starts with (BOS, else EOS as in GPT-2): under shift it is given."""
    for token_id in (getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if token_id is not None:
            return int(token_id)
    raise UserInputError("the tokenizer has neither a BOS nor an EOS token to start a sequence with")


def with_start_token(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """A generation prompt's ids: ``ids`` led by the start token (added unless it is already first)."""
    start = start_token_id(tokenizer)
    ids = list(ids)
    return ids if ids and ids[0] == start else [start, *ids]
