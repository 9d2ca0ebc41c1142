"""What a task asks of a model: score continuations and fill holes, independent of the model kind.

Two engines implement it: :class:`~dlm_eval.diffusion_engine.DiffusionEngine` (the core scorer and
sampler) and :class:`~dlm_eval.ar_engine.AutoregressiveEngine` (AR baselines).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from transformers import PretrainedConfig

from llamafactory.ddm import SamplingConfig, position_limit

# How a diffusion sampler picks tokens: the core's settings (docs/design.md#sampling), one per model family and
# task; its ``steps`` are taken from each FillRequest. AR baselines always decode greedily.
Decoding = SamplingConfig


@dataclass
class GenerationMeter:
    """What an engine's ``fill`` calls cost: examples, generated positions, model evaluations, seconds."""

    examples: int = 0
    tokens: int = 0
    evaluations: int = 0  # per example: denoiser (or decoder) forward passes its row took part in
    seconds: float = 0.0

    def add(self, other: GenerationMeter) -> None:
        self.examples += other.examples
        self.tokens += other.tokens
        self.evaluations += other.evaluations
        self.seconds += other.seconds

    def summary(self) -> dict[str, float]:
        """Tokens per second of generation and the mean NFE per example (``{}`` when nothing was generated)."""
        if not self.examples:
            return {}
        return {"generated_tokens": self.tokens, "generation_seconds": round(self.seconds, 3),
                "tokens_per_second": round(self.tokens / self.seconds, 2) if self.seconds > 0 else 0.0,
                "nfe_per_example": round(self.evaluations / self.examples, 2)}


@dataclass(frozen=True)
class FillRequest:
    """Generate ``length`` tokens between ``prefix`` and ``suffix`` (empty suffix: a continuation).

    ``steps`` is the number of reverse-diffusion steps T; ``seed`` seeds this request's own generator.
    """

    prefix: Sequence[int]
    length: int
    suffix: Sequence[int] = field(default_factory=tuple)
    steps: int = 32
    seed: int = 0


class Engine(Protocol):
    """A model as the tasks see it."""

    kind: str  # "diffusion" or "autoregressive"
    tokenizer: Any
    max_length: int  # the model's window, in tokens
    eos_ids: frozenset[int]  # ids that end a free-length answer
    decoding: Decoding  # the model family's sampler defaults
    meter: GenerationMeter  # what ``fill`` has cost so far

    def score(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *, steps: int, seed: int,
              desc: str, estimator: str = "original") -> list[float]:
        """One score per (context, continuation) pair; lower is better (``estimator``: docs/design.md#likelihood-scoring)."""

    def fill(self, requests: Sequence[FillRequest], decoding: Decoding, *, desc: str) -> list[list[int]]:
        """The generated hole of each request (at most ``length`` tokens)."""

    def sequence_nll(self, sequences: Sequence[Sequence[int]], *, given: int, steps: int, seed: int,
                     desc: str) -> list[tuple[float, int]]:
        """Summed NLL (nats) of each sequence's tokens after its first ``given``, and their count: exact for an
        AR model, the ELBO bound (``steps`` noise levels drawn from ``seed``) for a diffusion model."""

    def supervised_prompt(self, prompt: Sequence[int]) -> list[int]:
        """The prefix that precedes an answer in the fine-tuned (ddm-sft / sft) layout."""


def window(config: PretrainedConfig) -> int:
    """The longest sequence the engines give the model: the core's ``position_limit``; a config that names no
    limit is never cut (as the core's ``check_window`` never refuses it)."""
    limit = position_limit(config)
    return sys.maxsize if limit is None else limit
