"""Which masked positions a reverse step fixes: one function per rule (docs/design.md#sampling).

Every rule sees one :class:`Step` of the current block (a window of columns) and returns a boolean
``[batch, width]`` tensor of masked positions to fix now. Quota rules (``random``, ``topk``,
``confidence``) follow the linear schedule over the block's steps; parallel rules (``threshold``,
``factor``, ``eb``) fix as many positions as their test allows, at least one per row with a masked
position, so ``steps`` is only an upper bound for them. The sampler itself fixes every remaining mask
of a block at its last step, so no rule needs to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import UserInputError


@dataclass(frozen=True)
class Step:
    """What a rule may look at; every tensor is ``[batch, width]`` over the block's columns unless noted.

    ``confidence`` is a log-scale score (``log p`` of the candidate for the ``prob`` measure, ``log`` of the
    top-1 minus top-2 margin for ``margin``, minus the entropy for ``entropy``; ``exp`` of it lies in
    [0, 1]); it is set wherever a candidate was drawn: at masked positions, and for ``topk`` at every
    initially maskable position of the block. ``entropy`` is the candidate distribution's entropy (nats).
    """

    masked: torch.Tensor  # still masked
    maskable: torch.Tensor  # masked when the block started (the rows' initially maskable positions)
    confidence: torch.Tensor
    entropy: torch.Tensor | None
    steps_left: torch.Tensor  # [batch]: t, from T - 1 down to 1 within the block
    total: torch.Tensor  # [batch]: T, the block's number of steps
    generators: Sequence[torch.Generator | None]
    threshold: float = 0.9
    factor: float = 1.0
    eb_gamma: float = 0.1


Strategy = Callable[[Step], torch.Tensor]


def _quota(step: Step) -> torch.Tensor:
    """``floor(n * t / T)`` per row: how many of the block's ``n`` maskable positions stay masked at level t."""
    n = step.maskable.sum(dim=1)
    return torch.div(n * step.steps_left, step.total, rounding_mode="floor")


def random_keep(step: Step) -> torch.Tensor:
    """Fix each still-masked position with probability ``1 / (t + 1)`` (the quick-start default).

    Each row draws only for its own masked positions, so padding or batch width never changes a row.
    """
    masked = step.masked
    draws = torch.ones(masked.shape, device=masked.device)
    for b, generator in enumerate(step.generators):
        (columns,) = masked[b].nonzero(as_tuple=True)
        draws[b, columns] = torch.rand(columns.numel(), device=masked.device, generator=generator)
    return masked & (draws < 1.0 / (step.steps_left[:, None] + 1))


def original_topk(step: Step) -> torch.Tensor:
    """The original's top-k rule: rank every initially maskable position, fixed ones included.

    A position fixed earlier keeps its token but is scored by the fresh candidate drawn there. The
    positions scoring strictly below the ``(k+1)``-th lowest score (``k = floor(n t / T)``) form the
    keep-masked set; every still-masked position outside it is fixed. Fixed positions and ties can take
    places in that set, so fewer than ``k`` positions may stay masked.
    """
    score = step.confidence.masked_fill(~step.maskable, math.inf)
    kth = score.sort(dim=1).values.gather(1, _quota(step)[:, None])
    return step.masked & ~(score < kth)


def lowest_confidence_kept(step: Step) -> torch.Tensor:
    """Keep the ``floor(n t / T)`` least confident still-masked positions masked; fix the rest."""
    score = step.confidence.masked_fill(~step.masked, math.inf)
    rank = score.argsort(dim=1, stable=True).argsort(dim=1, stable=True)
    return step.masked & (rank >= _quota(step)[:, None])


def _sorted(step: Step, key: torch.Tensor, descending: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked positions sorted by ``key``, the others last: ``(order, sorted key, sorted masked flags)``."""
    fill = -math.inf if descending else math.inf
    ordered, order = key.masked_fill(~step.masked, fill).sort(dim=1, descending=descending, stable=True)
    return order, ordered, step.masked.gather(1, order)


def _fix_first(step: Step, order: torch.Tensor, passing: torch.Tensor) -> torch.Tensor:
    """Fix the longest run of passing positions at the head of ``order``, at least one where a mask is left."""
    count = passing.long().cumprod(dim=1).sum(dim=1)
    count = torch.maximum(count, step.masked.any(dim=1).long())
    chosen = torch.arange(order.shape[1], device=order.device)[None, :] < count[:, None]
    return torch.zeros_like(step.masked).scatter(1, order, chosen) & step.masked


def confidence_threshold(step: Step) -> torch.Tensor:
    """Fix every masked position whose confidence is at least ``threshold``, and at least the most confident."""
    order, ordered, masked = _sorted(step, step.confidence, descending=True)
    return _fix_first(step, order, masked & (ordered >= math.log(step.threshold)))


def confidence_factor(step: Step) -> torch.Tensor:
    """With confidences sorted ``c_1 >= c_2 >= ...``, fix the largest ``n`` with ``c_i >= 1 - f / (i + 1)``
    for every ``i <= n`` (at least one)."""
    order, ordered, masked = _sorted(step, step.confidence, descending=True)
    i = torch.arange(1, order.shape[1] + 1, device=order.device, dtype=ordered.dtype)
    return _fix_first(step, order, masked & (ordered.exp() >= 1.0 - step.factor / (i + 1)))


def entropy_bounded(step: Step) -> torch.Tensor:
    """Order by entropy (lowest first) and fix the largest prefix whose entropies sum, minus their
    maximum, to at most ``eb_gamma`` (at least one)."""
    if step.entropy is None:
        raise ValueError("the eb rule needs the candidates' entropies")
    order, ordered, masked = _sorted(step, step.entropy, descending=False)
    # Sorted ascending, a prefix's maximum is its last entry: sum minus max = the sum of the entries before it.
    before = (ordered.masked_fill(~masked, 0.0).cumsum(dim=1) - ordered.masked_fill(~masked, 0.0))
    return _fix_first(step, order, masked & (before <= step.eb_gamma))


STRATEGIES: dict[str, Strategy] = {
    "random": random_keep,
    "topk": original_topk,
    "confidence": lowest_confidence_kept,
    "threshold": confidence_threshold,
    "factor": confidence_factor,
    "eb": entropy_bounded,
}
CONFIDENCE_MEASURES = ("prob", "margin", "entropy")

# Peers' spellings: Dream's ``alg`` names a confidence measure with its fix-the-most-confident rule,
# LLaDA's ``remasking`` likewise; "origin" / "random" are their random orders.
DREAM_ALGORITHMS = {"origin": ("random", None), "maskgit_plus": ("confidence", "prob"),
                    "topk_margin": ("confidence", "margin"), "entropy": ("confidence", "entropy")}
LLADA_REMASKING = {"low_confidence": ("confidence", "prob"), "random": ("random", None)}


def resolve_rule(strategy: str | Strategy | None = None, *, alg: str | None = None, remasking: str | None = None,
                 confidence: str | None = None) -> tuple[str | Strategy | None, str | None]:
    """``(strategy, confidence measure)`` from this project's names or Dream's ``alg`` / LLaDA's ``remasking``.

    An alias sets the measure and, unless ``strategy`` is given, the rule; None means "the default".
    """
    for name, value, table in (("alg", alg, DREAM_ALGORITHMS), ("remasking", remasking, LLADA_REMASKING)):
        if value is None:
            continue
        if value not in table:
            raise UserInputError(f"unknown {name} {value!r}; expected one of {', '.join(table)}")
        rule, measure = table[value]
        if measure is not None and confidence is not None and confidence != measure:
            raise UserInputError(f"{name}={value!r} means confidence={measure!r}, but confidence={confidence!r} was given")
        strategy = rule if strategy is None else strategy
        confidence = measure if confidence is None else confidence
    return strategy, confidence
