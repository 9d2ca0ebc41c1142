"""Text -> token ids for evaluation, fitting into the model's window, and per-example seeds.

Two conventions. The original evaluation's (the default, docs/design.md#evaluation-protocols): each piece
of a prompt is tokenized on its own, with or without the tokenizer's special tokens exactly as the
original scripts called ``tokenizer.encode``, and the ids are concatenated (:func:`encode_pieces`,
:func:`split_whole`). The harness convention (``--prompt_format harness``): a (context, continuation)
pair is encoded as one string and split where the context's own tokens end, so word-boundary spaces
belong to the continuation (:func:`encode_pair`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llamafactory.errors import UserInputError


def encode(tokenizer: Any, text: str, *, special_tokens: bool = False) -> list[int]:
    """Token ids of ``text``; with ``special_tokens`` as ``tokenizer.encode(text)`` gives them (LLaMA's BOS first)."""
    return list(tokenizer(text, add_special_tokens=special_tokens)["input_ids"])


@dataclass(frozen=True)
class Piece:
    """A part of a prompt, tokenized on its own: ``scored`` pieces form the continuation."""

    text: str
    special_tokens: bool = False
    scored: bool = False


def encode_pieces(tokenizer: Any, pieces: Sequence[Piece]) -> tuple[list[int], list[int]]:
    """``(context_ids, continuation_ids)``: the given pieces' ids, then the scored pieces' ids, each piece
    encoded separately (the original scripts' ``prefix + tokenizer.encode(choice)``)."""
    context: list[int] = []
    continuation: list[int] = []
    for piece in pieces:
        if not piece.scored and continuation:
            raise ValueError("given pieces must come before the scored ones")
        (continuation if piece.scored else context).extend(encode(tokenizer, piece.text,
                                                                  special_tokens=piece.special_tokens))
    return context, continuation


def split_whole(tokenizer: Any, prefix: str, whole: str, *, special_tokens: bool) -> tuple[list[int], list[int]]:
    """The original LAMBADA split: ``whole`` (which starts with ``prefix``) is tokenized once and its first
    ``len(encode(prefix))`` ids are given, the rest is the target. Should that leave no target, the prefix
    and the rest of ``whole`` are tokenized separately instead."""
    ids = encode(tokenizer, whole, special_tokens=special_tokens)
    prefix_ids = encode(tokenizer, prefix, special_tokens=special_tokens)
    if len(prefix_ids) < len(ids):
        return ids[: len(prefix_ids)], ids[len(prefix_ids) :]
    return prefix_ids, encode(tokenizer, whole[len(prefix) :])


def leading_special_ids(tokenizer: Any) -> list[int]:
    """The ids a tokenizer puts before a text by default (LLaMA's BOS; nothing for GPT-2)."""
    plain = encode(tokenizer, "a")
    full = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start]
    return []


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """``(context_ids, continuation_ids)``; the context starts with the tokenizer's leading specials.

    Trailing spaces of the context move to the continuation; the pair is tokenized as one string and
    split at the context's length, unless the context's tokens are not a prefix of the whole.
    """
    stripped = context.rstrip(" ")
    continuation = context[len(stripped) :] + continuation
    context_ids = encode(tokenizer, stripped)
    whole = encode(tokenizer, stripped + continuation)
    if whole[: len(context_ids)] == context_ids and len(whole) > len(context_ids):
        continuation_ids = whole[len(context_ids) :]
    else:
        continuation_ids = encode(tokenizer, continuation)
    return leading_special_ids(tokenizer) + context_ids, continuation_ids


def encode_prefix(tokenizer: Any, text: str) -> list[int]:
    """A prompt's ids, after the tokenizer's leading specials."""
    return leading_special_ids(tokenizer) + encode(tokenizer, text)


def _keep_head_and_tail(ids: list[int], keep: int) -> list[int]:
    """The first token plus the last ``keep - 1`` tokens (``keep >= 1``)."""
    return ids[:1] + ids[len(ids) - (keep - 1) :] if keep > 1 else ids[:1]


def fit_pair(context: Sequence[int], continuation: Sequence[int], limit: int) -> tuple[list[int], list[int], bool]:
    """Cut the context from the left (keeping its first token) so the pair fits ``limit`` tokens.

    Returns the pieces and whether anything was cut; a continuation too long for the window is
    shortened from the right so that one context token stays.
    """
    context, continuation = list(context), list(continuation)
    if len(context) + len(continuation) <= limit:
        return context, continuation, False
    continuation = continuation[: limit - 1]
    return _keep_head_and_tail(context, limit - len(continuation)), continuation, True


def fit_infill(
    prefix: Sequence[int], length: int, suffix: Sequence[int], limit: int
) -> tuple[list[int], int, list[int], bool]:
    """Cut the prefix from the left (keeping its first token), then the suffix from the right, to fit.

    Returns ``(prefix, length, suffix, cut)``; the hole is shortened only when it alone overflows.
    """
    prefix, suffix = list(prefix), list(suffix)
    if not prefix:
        raise UserInputError("an infilling prefix must hold at least one token")
    if len(prefix) + length + len(suffix) <= limit:
        return prefix, length, suffix, False
    length = min(length, limit - 1)
    room = limit - length
    prefix_keep = min(len(prefix), max(1, room - len(suffix)))
    return _keep_head_and_tail(prefix, prefix_keep), length, suffix[: room - prefix_keep], True


def example_seed(seed: int, task: str, index: int) -> int:
    """A seed for one example that depends only on the run seed, the task and the example's index."""
    return (seed * 1_000_003 + zlib.crc32(f"{task}/{index}".encode())) % (2**63 - 1)
