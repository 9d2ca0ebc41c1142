"""Spans with a known answer, filled through an engine: the example pipelines' AR-vs-diffusion measurements.

A span is given the tokens before it (and, for a diffusion model, those after it) and is filled with as
many tokens as its gold answer, in ``steps`` reverse steps for a diffusion model. It scores by exact match
of the answer up to the first end-of-text token, and by token accuracy, position by position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llamafactory.errors import UserInputError

from .engine import Decoding, Engine, FillRequest
from .text import example_seed


@dataclass(frozen=True)
class Span:
    """One test item as token ids: given ``before``, a ``target`` to generate, given ``after``; ``kind`` groups items."""

    kind: str
    before: tuple[int, ...]
    target: tuple[int, ...]
    after: tuple[int, ...] = ()


def fill_spans(engine: Engine, spans: Sequence[Span], decoding: Decoding, *, steps: int | None, seed: int = 0,
               desc: str) -> list[tuple[int, ...]]:
    """Each span's ``len(target)`` generated tokens; ``steps=None`` means one reverse step per target token.

    Every span samples from its own generator, seeded by ``seed`` and its index, so a span's tokens do not
    depend on the batch it shares.
    """
    requests = [FillRequest(span.before, len(span.target), span.after, steps=steps or len(span.target),
                            seed=example_seed(seed, "span", index)) for index, span in enumerate(spans)]
    return [tuple(hole) for hole in engine.fill(requests, decoding, desc=desc)]


def answer(tokens: Sequence[int], eos_id: int) -> tuple[int, ...]:
    """The tokens before the first end-of-text token (all of them when there is none)."""
    tokens = tuple(tokens)
    return tokens[: tokens.index(eos_id)] if eos_id in tokens else tokens


def exact_matches(outputs: Sequence[Sequence[int]], spans: Sequence[Span], eos_id: int) -> list[bool]:
    """Per span: whether the generated answer equals the gold one, both cut at the first end-of-text token."""
    return [answer(out, eos_id) == answer(span.target, eos_id) for out, span in zip(outputs, spans)]


def token_accuracy(outputs: Sequence[Sequence[int]], spans: Sequence[Span]) -> float:
    """Percent of target tokens that the generated span has at the same position."""
    correct = sum(sum(a == b for a, b in zip(out, span.target)) for out, span in zip(outputs, spans))
    return 100.0 * correct / max(1, sum(len(span.target) for span in spans))


def parse_steps(text: str) -> list[int | None]:
    """``"1,4,16,n"`` -> ``[1, 4, 16, None]``; ``n`` stands for one step per generated token."""
    values: list[int | None] = []
    for item in text.split(","):
        item = item.strip()
        if item == "n":
            values.append(None)
        elif item.isdigit() and int(item) > 0:
            values.append(int(item))
        else:
            raise UserInputError(f"--steps: expected positive integers or 'n' separated by commas, got {item!r}")
    return values
