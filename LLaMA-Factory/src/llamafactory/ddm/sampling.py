"""Reverse diffusion (docs/design.md#sampling): one loop, with a pluggable rule for which masked positions to fix.

Each of the ``T`` steps predicts every position at once, draws a candidate token and its log-probability
for each still-masked position, and asks a *strategy* which of them to fix now. Given positions
(``src_mask``) never change; after the last step no mask token remains. Every random draw of a row comes
from that row's own generator, so a row's result does not depend on what else is in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import UserInputError
from .model import align_to_tokens, first_predicted_token

# (masked [B, L] bool, confidence [B, L] float, steps_left t in T-1..1, total T, n_maskable [B],
#  per-row generators) -> bool [B, L]: which masked positions to fix at this step.
Strategy = Callable[
    [torch.Tensor, torch.Tensor, int, int, torch.Tensor, Sequence[torch.Generator | None]], torch.Tensor
]
Denoiser = Callable[[torch.Tensor], torch.Tensor]


def random_keep(masked, confidence, steps_left, total, n_maskable, generators) -> torch.Tensor:
    """Fix each still-masked position with probability ``1 / (t + 1)`` (the quick-start default).

    Each row draws only for its own masked positions, so padding or batch width never changes a row.
    """
    draws = torch.ones(masked.shape, device=masked.device)
    for b, generator in enumerate(generators):
        (columns,) = masked[b].nonzero(as_tuple=True)
        draws[b, columns] = torch.rand(columns.numel(), device=masked.device, generator=generator)
    return masked & (draws < 1.0 / (steps_left + 1))


def topk_confidence(masked, confidence, steps_left, total, n_maskable, generators) -> torch.Tensor:
    """Keep the ``floor(n_maskable * t / T)`` least confident masked positions masked; fix the rest."""
    keep = torch.div(n_maskable * steps_left, total, rounding_mode="floor")  # [B]
    score = confidence.masked_fill(~masked, math.inf)
    rank = score.argsort(dim=1, stable=True).argsort(dim=1, stable=True)
    return masked & (rank >= keep[:, None])


STRATEGIES: dict[str, Strategy] = {"random": random_keep, "topk": topk_confidence}


@dataclass
class SamplingConfig:
    """Sampler settings; defaults are the quick-start ones of DiffuGPT (docs/design.md#sampling)."""

    steps: int = 64
    temperature: float = 0.95
    top_p: float | None = 0.9
    greedy: bool = False
    strategy: str | Strategy = "random"
    shift: bool = True
    record_history: bool = False

    def validate(self) -> None:
        if self.steps < 1:
            raise UserInputError(f"diffusion_steps must be >= 1, got {self.steps}")
        if self.temperature <= 0:
            raise UserInputError(f"logits_temp must be > 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UserInputError(f"topp_temp must be in (0, 1], got {self.top_p}")
        if isinstance(self.strategy, str) and self.strategy not in STRATEGIES:
            raise UserInputError(
                f"unknown strategy {self.strategy!r}; expected one of {', '.join(STRATEGIES)}"
            )


@dataclass
class SamplingOutput:
    tokens: torch.Tensor  # [B, L]
    history: list[torch.Tensor] = field(default_factory=list)  # per step, on CPU, when recorded


NUCLEUS_FAST_K = 256


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


def propose(
    logits: torch.Tensor,
    config: SamplingConfig,
    generators: Sequence[torch.Generator | None],
    rows: torch.Tensor,
    mask_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate tokens and their log-probabilities for ``[N, vocab]`` logits of rows ``rows``.

    The mask token is never proposed. Temperature, then nucleus filter, then argmax when greedy, else
    one categorical draw per position by inverting the cumulative distribution with a single uniform
    from the row's own generator (one draw per position, not one per vocabulary entry).
    """
    logits = logits.float() / config.temperature
    logits[:, mask_id] = -math.inf
    if config.top_p is not None:
        logits = nucleus_filter(logits, config.top_p)
    log_probs = logits.log_softmax(dim=-1)
    if config.greedy:
        tokens = log_probs.argmax(dim=-1)
    else:
        uniform = torch.empty(log_probs.shape[0], device=log_probs.device)
        for b, generator in enumerate(generators):
            picked = rows == b
            count = int(picked.sum())
            if count:
                uniform[picked] = torch.rand(count, device=log_probs.device, generator=generator)
        cumulative = log_probs.exp().cumsum(dim=-1)
        threshold = uniform[:, None] * cumulative[:, -1:]
        tokens = torch.searchsorted(cumulative, threshold, right=True).squeeze(-1).clamp_(max=logits.shape[-1] - 1)
    return tokens, log_probs.gather(-1, tokens[:, None]).squeeze(-1)


def _generators(
    generator: torch.Generator | Sequence[torch.Generator] | None, batch_size: int
) -> list[torch.Generator | None]:
    if generator is None or isinstance(generator, torch.Generator):
        return [generator] * batch_size
    generators = list(generator)
    if len(generators) != batch_size:
        raise UserInputError(f"got {len(generators)} generators for a batch of {batch_size} rows")
    return generators


@torch.no_grad()
def sample(
    denoiser: Denoiser,
    input_ids: torch.Tensor,
    mask_id: int,
    config: SamplingConfig,
    *,
    src_mask: torch.Tensor | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    progress: Callable[[int], None] | None = None,
) -> SamplingOutput:
    """Fill every non-given position of ``input_ids`` ``[B, L]`` by ``config.steps`` reverse steps.

    ``denoiser`` maps token ids ``[B, L]`` to raw logits ``[B, L, vocab]``. ``src_mask`` (True = given)
    may differ per row; with ``shift`` token 0 is always given. ``generator`` is one generator, or one
    per row for batch-independent results. ``progress`` is called after each step.
    """
    config.validate()
    strategy = STRATEGIES[config.strategy] if isinstance(config.strategy, str) else config.strategy
    batch_size, length = input_ids.shape
    generators = _generators(generator, batch_size)
    given = torch.zeros_like(input_ids, dtype=torch.bool) if src_mask is None else src_mask.bool().clone()
    given[:, : first_predicted_token(config.shift)] = True
    if (given & (input_ids == mask_id)).any():
        raise UserInputError(
            "a given position holds the mask token (under shift token 0 is always given: start each row with BOS)"
        )
    masked = ~given
    n_maskable = masked.sum(dim=1)
    tokens = torch.where(masked, torch.full_like(input_ids, mask_id), input_ids)
    history = [tokens.cpu()] if config.record_history else []
    for steps_left in range(config.steps - 1, -1, -1):
        if not masked.any():
            break
        logits = align_to_tokens(denoiser(tokens), config.shift)
        rows, cols = masked.nonzero(as_tuple=True)
        candidates, log_probs = propose(logits[rows, cols], config, generators, rows, mask_id)
        proposal = tokens.clone()
        proposal[rows, cols] = candidates
        confidence = torch.full(masked.shape, -math.inf, device=tokens.device)
        confidence[rows, cols] = log_probs
        if steps_left == 0:
            fix = masked
        else:
            fix = strategy(masked, confidence, steps_left, config.steps, n_maskable, generators)
        tokens = torch.where(fix, proposal, tokens)
        masked &= ~fix
        if config.record_history:
            history.append(tokens.cpu())
        if progress is not None:
            progress(1)
    return SamplingOutput(tokens=tokens, history=history)
