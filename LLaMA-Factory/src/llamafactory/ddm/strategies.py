"""Which masked positions a reverse step fixes: one :class:`Rule` object per rule (docs/design.md#sampling).

A rule sees one :class:`Step` of the current block (a window of columns) and returns a boolean
``[batch, width]`` tensor of masked positions to fix now; it reads its own parameters (``threshold``,
``factor``, ``eb_gamma``, ``schedule``) from ``Step.settings``. Its flags tell the reverse loop what to
compute for it, so a new rule is one new object and the loop does not change. Quota rules (``topk``,
``confidence``) keep the number of masks the *schedule* names (``SCHEDULES``); ``random`` follows the
linear schedule in expectation; parallel rules (``threshold``, ``factor``, ``eb``) fix as many positions
as their test allows, at least one per row with a masked position, so ``steps`` is only an upper bound
for them. The loop itself fixes every remaining mask of a block at its last step, so no rule needs to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from ..errors import UserInputError


class RuleSettings(Protocol):
    """The settings rules read (fields of ``SamplingConfig``)."""

    threshold: float
    factor: float
    eb_gamma: float
    schedule: str


@dataclass(frozen=True)
class Step:
    """What a rule may look at; every tensor is ``[batch, width]`` over the block's columns unless noted.

    ``confidence`` is a log-scale score (``log p`` of the candidate for the ``prob`` measure, ``log`` of the
    top-1 minus top-2 margin for ``margin``, minus the entropy for ``entropy``; ``exp`` of it lies in
    [0, 1]); it is set wherever a candidate was drawn: at masked positions, and for a rule that scores
    fixed positions at every initially maskable position of the block. ``entropy`` is the candidate
    distribution's entropy (nats), set for a rule that needs it.
    """

    masked: torch.Tensor  # still masked
    maskable: torch.Tensor  # masked when the block started (the rows' initially maskable positions)
    confidence: torch.Tensor
    entropy: torch.Tensor | None
    steps_left: torch.Tensor  # [batch]: t, from T - 1 down to 1 within the block
    total: torch.Tensor  # [batch]: T, the block's number of steps
    generators: Sequence[torch.Generator | None]
    settings: RuleSettings


@dataclass(frozen=True)
class Rule:
    """A decoding rule and what it needs from the loop.

    ``scores_fixed``: candidates and confidences are drawn at every initially maskable position of the
    block, fixed ones included (the original top-k), not only at the masked ones. ``needs_entropy``: the
    candidates' entropies are computed for it.
    """

    choose: Callable[[Step], torch.Tensor]
    scores_fixed: bool = False
    needs_entropy: bool = False

    def __call__(self, step: Step) -> torch.Tensor:
        return self.choose(step)


Strategy = Rule | Callable[[Step], torch.Tensor]


def as_rule(strategy: Strategy) -> Rule:
    """A plain function of a :class:`Step` is a rule that needs nothing beyond the masked positions' scores."""
    return strategy if isinstance(strategy, Rule) else Rule(strategy)


# Schedules: how many of the block's positions stay masked after a quota step at level t (T - 1, ..., 1).
DREAM_EPS = 1e-3  # the last time of Dream's grid linspace(1, eps, T + 1) (its generate's default)


def linear_kept(step: Step) -> torch.Tensor:
    """``floor(n t / T)`` of the block's ``n`` maskable positions (this project's and the original's)."""
    n = step.maskable.sum(dim=1)
    return torch.div(n * step.steps_left, step.total, rounding_mode="floor")


def llada_kept(step: Step) -> torch.Tensor:
    """LLaDA's schedule: the block's ``n`` positions spread evenly over its ``T`` steps, the remainder one
    each on the first steps; this step fixes its share of the still-masked positions."""
    n, total = step.maskable.sum(dim=1), step.total
    index = total - 1 - step.steps_left
    share = torch.div(n, total, rounding_mode="floor") + (index < n % total).long()
    return (step.masked.sum(dim=1) - share).clamp(min=0)


def dream_kept(step: Step) -> torch.Tensor:
    """Dream's schedule: with consecutive times ``t > s`` of the grid ``linspace(1, eps, T + 1)``, fix
    ``int(m (1 - s / t))`` of the ``m`` masks left (in float32, as Dream computes it)."""
    left = step.masked.sum(dim=1)
    kept = torch.empty_like(left)
    for b, (total, steps_left) in enumerate(zip(step.total.tolist(), step.steps_left.tolist())):
        grid = torch.linspace(1, DREAM_EPS, total + 1)
        index = total - 1 - steps_left
        fraction = 1 - grid[index + 1] / grid[index]
        kept[b] = left[b] - int(left[b].float().cpu() * fraction)
    return kept


SCHEDULES: dict[str, Callable[[Step], torch.Tensor]] = {"linear": linear_kept, "llada": llada_kept, "dream": dream_kept}


def _kept(step: Step) -> torch.Tensor:
    return SCHEDULES[step.settings.schedule](step)


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
    positions scoring strictly below the ``(k+1)``-th lowest score (``k`` from the schedule) form the
    keep-masked set; every still-masked position outside it is fixed. Fixed positions and ties can take
    places in that set, so fewer than ``k`` positions may stay masked.
    """
    score = step.confidence.masked_fill(~step.maskable, math.inf)
    kth = score.sort(dim=1).values.gather(1, _kept(step)[:, None])
    return step.masked & ~(score < kth)


def lowest_confidence_kept(step: Step) -> torch.Tensor:
    """Keep the schedule's number of least confident still-masked positions masked; fix the rest."""
    score = step.confidence.masked_fill(~step.masked, math.inf)
    rank = score.argsort(dim=1, stable=True).argsort(dim=1, stable=True)
    return step.masked & (rank >= _kept(step)[:, None])


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
    return _fix_first(step, order, masked & (ordered >= math.log(step.settings.threshold)))


def confidence_factor(step: Step) -> torch.Tensor:
    """With confidences sorted ``c_1 >= c_2 >= ...``, fix the largest ``n`` with ``c_i >= 1 - f / (i + 1)``
    for every ``i <= n`` (at least one)."""
    order, ordered, masked = _sorted(step, step.confidence, descending=True)
    i = torch.arange(1, order.shape[1] + 1, device=order.device, dtype=ordered.dtype)
    return _fix_first(step, order, masked & (ordered.exp() >= 1.0 - step.settings.factor / (i + 1)))


def entropy_bounded(step: Step) -> torch.Tensor:
    """Order by entropy (lowest first) and fix the largest prefix whose entropies sum, minus their
    maximum, to at most ``eb_gamma`` (at least one)."""
    if step.entropy is None:
        raise ValueError("the eb rule needs the candidates' entropies")
    order, ordered, masked = _sorted(step, step.entropy, descending=False)
    # Sorted ascending, a prefix's maximum is its last entry: sum minus max = the sum of the entries before it.
    before = (ordered.masked_fill(~masked, 0.0).cumsum(dim=1) - ordered.masked_fill(~masked, 0.0))
    return _fix_first(step, order, masked & (before <= step.settings.eb_gamma))


STRATEGIES: dict[str, Rule] = {
    "random": Rule(random_keep),
    "topk": Rule(original_topk, scores_fixed=True),
    "confidence": Rule(lowest_confidence_kept),
    "threshold": Rule(confidence_threshold),
    "factor": Rule(confidence_factor),
    "eb": Rule(entropy_bounded, needs_entropy=True),
}
CONFIDENCE_MEASURES = ("prob", "margin", "entropy")


@dataclass(frozen=True)
class PeerName:
    """What a peer's ``alg`` / ``remasking`` value stands for: a rule, a confidence measure (None: any), and
    the peer's schedule and confidence distribution (the full softmax)."""

    strategy: str
    measure: str | None
    schedule: str


# Dream's ``alg`` names a confidence measure with its fix-the-most-confident rule, LLaDA's ``remasking``
# likewise; "origin" / "random" are their random orders.
DREAM_ALGORITHMS = {"origin": PeerName("random", None, "dream"), "maskgit_plus": PeerName("confidence", "prob", "dream"),
                    "topk_margin": PeerName("confidence", "margin", "dream"),
                    "entropy": PeerName("confidence", "entropy", "dream")}
LLADA_REMASKING = {"low_confidence": PeerName("confidence", "prob", "llada"), "random": PeerName("random", None, "llada")}


@dataclass(frozen=True)
class ResolvedRule:
    """The settings a rule name comes to; None means "the default" (``SamplingConfig``'s)."""

    strategy: str | Strategy | None = None
    confidence: str | None = None
    schedule: str | None = None
    confidence_distribution: str | None = None


def resolve_rule(strategy: str | Strategy | None = None, *, alg: str | None = None, remasking: str | None = None,
                 confidence: str | None = None, schedule: str | None = None,
                 confidence_distribution: str | None = None, rule_settings: Sequence[str] = ()) -> ResolvedRule:
    """The rule settings from this project's names or Dream's ``alg`` / LLaDA's ``remasking``.

    A peer's name sets, unless given explicitly, the rule, the measure, the peer's schedule and the full
    softmax as the confidence distribution; a measure that contradicts it is an error. ``rule_settings``
    names the rules whose own settings were given (``threshold``, ``factor``, ``eb_gamma``): with
    ``remasking="low_confidence"`` and no ``strategy`` such a setting selects its rule, as a given
    ``threshold`` or ``factor`` selects Fast-dLLM's threshold or factor decoding.
    """
    if remasking == "low_confidence" and strategy is None and rule_settings:
        if len(rule_settings) > 1:
            raise UserInputError(f"remasking='low_confidence' with settings of the rules {', '.join(rule_settings)}: "
                                 "give strategy= to choose one")
        strategy = rule_settings[0]
    for name, value, table in (("alg", alg, DREAM_ALGORITHMS), ("remasking", remasking, LLADA_REMASKING)):
        if value is None:
            continue
        if value not in table:
            raise UserInputError(f"unknown {name} {value!r}; expected one of {', '.join(table)}")
        peer = table[value]
        if peer.measure is not None and confidence is not None and confidence != peer.measure:
            raise UserInputError(f"{name}={value!r} means confidence={peer.measure!r}, but confidence={confidence!r} "
                                 "was given")
        strategy = peer.strategy if strategy is None else strategy
        confidence = peer.measure if confidence is None else confidence
        schedule = peer.schedule if schedule is None else schedule
        confidence_distribution = "full" if confidence_distribution is None else confidence_distribution
    return ResolvedRule(strategy, confidence, schedule, confidence_distribution)
