"""Candidate tokens and their confidence at the positions a reverse step looks at (docs/design.md#sampling).

From raw logits: divide by the temperature (0 means argmax), never propose the mask token or a
suppressed token, keep the ``top_k`` most likely and then the nucleus of mass ``top_p``, and take the
argmax or draw one token. A row's draws come from that row's own generator. The confidence is read off
the distribution the candidate was drawn from (``proposable``, the default) or, as LLaDA and Dream do,
off the full softmax with the mask token's mass left in (``full``; the filters then apply to it too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

NUCLEUS_FAST_K = 256
CONFIDENCE_DISTRIBUTIONS = ("proposable", "full")


class TokenChoice(Protocol):
    """The settings a proposal reads (fields of ``SamplingConfig``)."""

    temperature: float
    top_p: float | None
    top_k: int | None
    greedy: bool
    confidence: str
    confidence_distribution: str
    suppress_tokens: Sequence[int]


@dataclass(frozen=True)
class Proposal:
    """One candidate per position: its token, its log-scale confidence and (when asked) its entropy."""

    tokens: torch.Tensor  # [N]
    confidence: torch.Tensor  # [N], <= 0
    entropy: torch.Tensor | None  # [N], nats


def _nucleus_threshold(sorted_probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Probability of the last token kept, per row, from probabilities sorted in descending order."""
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    kept = (mass_before < top_p).sum(dim=-1, keepdim=True).clamp(min=1)
    return sorted_probs.gather(-1, kept - 1)


def nucleus_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Set to -inf every token outside the smallest set whose probability reaches ``top_p``.

    The set is read off the top ``NUCLEUS_FAST_K`` tokens where they already hold ``top_p`` of the
    mass (peaked rows, the usual case); only the other rows pay for a full sort.
    """
    if top_p >= 1.0:
        return logits
    probs = logits.softmax(dim=-1)
    top, _ = probs.topk(min(NUCLEUS_FAST_K, probs.shape[-1]), dim=-1)
    threshold = _nucleus_threshold(top, top_p)
    flat = top.sum(dim=-1) < top_p
    if flat.any():
        threshold[flat] = _nucleus_threshold(probs[flat].sort(dim=-1, descending=True).values, top_p)
    return logits.masked_fill(probs < threshold, -math.inf)


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Set to -inf every token below the ``top_k``-th largest logit of its row."""
    if top_k >= logits.shape[-1]:
        return logits
    kth = logits.topk(top_k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, -math.inf)


def _draw(log_probs: torch.Tensor, generators: Sequence[torch.Generator | None], rows: torch.Tensor) -> torch.Tensor:
    """One categorical draw per position by inverting the cumulative distribution with a single uniform from
    the row's own generator (one draw per position, not one per vocabulary entry)."""
    uniform = torch.empty(log_probs.shape[0], device=log_probs.device)
    for b, generator in enumerate(generators):
        picked = rows == b
        count = int(picked.sum())
        if count:
            uniform[picked] = torch.rand(count, device=log_probs.device, generator=generator)
    cumulative = log_probs.exp().cumsum(dim=-1)
    threshold = uniform[:, None] * cumulative[:, -1:]
    return torch.searchsorted(cumulative, threshold, right=True).squeeze(-1).clamp_(max=log_probs.shape[-1] - 1)


def propose(
    logits: torch.Tensor,
    choice: TokenChoice,
    generators: Sequence[torch.Generator | None],
    rows: torch.Tensor,
    mask_id: int,
    *,
    with_entropy: bool = False,
) -> Proposal:
    """Candidates for ``[N, vocab]`` logits of positions in batch rows ``rows`` (draws use ``generators[row]``)."""
    greedy = choice.greedy or choice.temperature == 0
    logits = logits.float() / (choice.temperature if choice.temperature > 0 else 1.0)
    never = [mask_id, *choice.suppress_tokens]
    full = choice.confidence_distribution == "full"
    if not full:
        logits[:, never] = -math.inf
    if choice.top_k is not None:
        logits = top_k_filter(logits, choice.top_k)
    if choice.top_p is not None:
        logits = nucleus_filter(logits, choice.top_p)
    scored = logits.log_softmax(dim=-1)
    log_probs = scored
    if full:
        log_probs = logits.index_fill(1, torch.tensor(never, device=logits.device), -math.inf).log_softmax(dim=-1)
    tokens = log_probs.argmax(dim=-1) if greedy else _draw(log_probs, generators, rows)
    entropy = None
    if with_entropy or choice.confidence == "entropy":
        entropy = torch.special.entr(scored.exp()).sum(dim=-1)
    if choice.confidence == "entropy":
        confidence = -entropy
    elif choice.confidence == "margin":
        proposable = scored.masked_fill(~torch.isfinite(log_probs), -math.inf)
        top2 = proposable.exp().topk(min(2, log_probs.shape[-1]), dim=-1).values
        confidence = (top2[:, 0] - (top2[:, 1] if top2.shape[1] > 1 else 0.0)).log()
    else:
        confidence = scored.gather(-1, tokens[:, None]).squeeze(-1)
    return Proposal(tokens=tokens, confidence=confidence, entropy=entropy)
