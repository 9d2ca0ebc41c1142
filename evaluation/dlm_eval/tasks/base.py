"""What a task is: a loader for its published format, an evaluation over an engine, a table column."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..data import DataSource
from ..engine import Decoding, Engine

# The sampler of the original evaluation (its trainer's ``generate_samples``): top-k confidence unmasking,
# temperature only (no nucleus), sampled tokens (docs/design.md#evaluation-protocols).
ORIGINAL_SAMPLER = {"strategy": "topk", "top_p": None, "greedy": False}
PROMPT_FORMATS = ("original", "harness")


@dataclass(frozen=True)
class Settings:
    """Run-wide evaluation settings (the CLI flags); ``decoding`` fields left None use task defaults.

    ``scorer``: the likelihood estimator of multiple choice (``original`` or ``exact``); ``prompt_format``:
    how multiple-choice prompts are written and tokenized (``original`` or ``harness``);
    ``gsm8k_temperature``: the temperature of the model family's original GSM8K config;
    ``fast_generation`` holds the fast-generation flags the user set (``block_length``, ``cache``, ...),
    as ``Decoding`` fields; every generation task applies them.
    """

    seed: int = 0
    diffusion_steps: int = 32
    temperature: float | None = None
    top_p: float | None = None
    strategy: str | None = None
    greedy: bool | None = None
    scorer: str = "original"
    prompt_format: str = "original"
    fast_generation: Mapping[str, Any] = field(default_factory=dict)
    triviaqa_extra_tokens: int = 0
    gsm8k_steps: int = 64
    gsm8k_max_length: int = 256
    gsm8k_temperature: float = 1.0
    code_timeout: float = 10.0
    code_workers: int = field(default_factory=lambda: max(1, min(8, os.cpu_count() or 1)))

    def decoding(self, base: Decoding, **task_defaults: Any) -> Decoding:
        """The original sampler at ``base``'s temperature (the model family's), then the task's defaults,
        then any flag the user set."""
        chosen = replace(base, **{**ORIGINAL_SAMPLER, **task_defaults})
        flags = {"temperature": self.temperature, "top_p": self.top_p, "strategy": self.strategy,
                 "greedy": self.greedy, **self.fast_generation}
        return replace(chosen, **{k: v for k, v in flags.items() if v is not None})


@dataclass
class TaskResult:
    """Headline metrics (fractions in [0, 1]), one record per example, and the settings actually used."""

    metrics: dict[str, float]
    examples: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)


# How a task evaluates: ``(engine, examples, settings, indices)``, where ``indices`` are the examples'
# positions in the whole task (each example's sampler seed depends on it; None: 0, 1, 2, ...).
Evaluate = Callable[[Engine, list[Any], Settings, "Sequence[int] | None"], TaskResult]


@dataclass(frozen=True)
class Task:
    """One benchmark. ``load`` returns every record of the published split, in file order.

    ``averages`` names each metric's per-example field: a metric is that field's mean over the examples,
    so results computed in pieces (processes, resumed runs) combine exactly (``field_means``).
    """

    name: str
    column: str  # heading in the paper's table
    metrics: tuple[str, ...]  # the metric(s) shown in that column
    load: Callable[[DataSource], list[Any]]
    evaluate: Evaluate
    averages: Mapping[str, str]
    default_limit: int | None = None  # the paper's subset size, when it used one
    in_paper: bool = True


ACCURACY = {"accuracy": "correct"}


def mean(values: list[float] | list[bool]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def field_means(records: Sequence[Mapping[str, Any]], averages: Mapping[str, str]) -> dict[str, float]:
    """Each metric of ``averages`` (metric name -> per-example field) as its field's mean over ``records``."""
    return {metric: mean([record[field] for record in records]) for metric, field in averages.items()}


def positions(examples: Sequence[Any], indices: Sequence[int] | None) -> Sequence[int]:
    """The examples' positions in their task: ``indices`` when given, else 0, 1, 2, ..."""
    if indices is None:
        return range(len(examples))
    if len(indices) != len(examples):
        raise ValueError(f"{len(indices)} indices for {len(examples)} examples")
    return indices
