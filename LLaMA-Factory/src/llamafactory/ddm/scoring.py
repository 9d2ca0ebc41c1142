"""Likelihood estimates from a diffusion LM (docs/design.md#likelihood-scoring), batched across examples and noise levels.

For a (context, continuation) pair and ``T`` levels ``t = T .. 1``, some of the ``n`` continuation tokens
are masked at each level, the unweighted mean masked cross-entropy is taken (0 for a level that masks
nothing), and the levels are averaged. Two estimators pick the masks:

* ``original`` (the original evaluation's): each token is masked independently with probability ``t/T``;
* ``exact``: exactly ``ceil(n * t / T)`` tokens, drawn uniformly (never an empty level; lower variance).

A model with a ``block_size`` (block diffusion, docs/design.md#block-diffusion) scores each masked token from its
block's conditional: its block noised as the level says, the blocks before it clean, later blocks unseen; all
blocks of a level in one forward of ``[x_t ; x_0]``.

Lower is better; multiple choice picks the argmin. The masks depend only on the seed, the estimator and the
continuation length, and every row is scored with padding hidden from attention, so results do not
depend on the batch size or batch composition.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from ..errors import UserInputError
from .attention import position_ids
from .model import DiffusionLM, first_predicted_token, predicting_output
from .noise import block_predicting_outputs, noisy_clean_inputs


@dataclass(frozen=True)
class _Row:
    owner: int  # index of the sequence this row belongs to
    ids: list[int]
    masked: list[int]  # positions replaced by the mask token


ESTIMATORS = ("original", "exact")


def level_masks(n: int, steps: int, seed: int, estimator: str) -> list[list[int]]:
    """For levels ``t = T .. 1``: the positions (of ``0 .. n-1``) to mask, drawn from a generator seeded by ``seed``.

    ``original``: position ``i`` is masked when the ``i``-th of ``n`` uniforms drawn for the level is below
    ``t/T`` (all at ``t = T``; possibly none at low ``t``). ``exact``: the first ``ceil(n * t / T)`` of a
    random permutation drawn for the level.
    """
    if estimator not in ESTIMATORS:
        raise UserInputError(f"unknown scorer {estimator!r}; expected one of {', '.join(ESTIMATORS)}")
    generator = torch.Generator().manual_seed(seed)
    masks = []
    for t in range(steps, 0, -1):
        if estimator == "original":
            masks.append((torch.rand(n, generator=generator) < t / steps).nonzero().flatten().tolist())
        else:
            order = torch.randperm(n, generator=generator).tolist()
            masks.append(sorted(order[: max(1, math.ceil(n * t / steps))]))
    return masks


def _masked_losses(model: DiffusionLM, ids: torch.Tensor, clean: torch.Tensor, attention: torch.Tensor | None,
                   rows: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (float32) at each masked ``(rows, positions)`` of ``ids`` (``clean``: the unmasked ids); the
    head runs on those positions only. Under ``block_size`` the forward is the ``[x_t ; x_0]`` one."""
    if model.block_size is None:
        inputs = {"input_ids": ids, "attention_mask": attention}
        source = predicting_output(positions, model.shift)
    else:
        inputs = noisy_clean_inputs(ids, clean, model.block_size, attention_mask=attention, dtype=model.dtype)
        columns = position_ids(attention, ids.shape, ids.device)
        source = block_predicting_outputs(rows, positions, columns, model.block_size, model.shift)
    if model.has_plain_head():
        hidden = model.hidden_states(**inputs)[rows, source]  # [N, hidden]
        logits = model.output_head()(hidden)
    else:
        logits = model(**inputs)[rows, source]
    return F.cross_entropy(logits.float(), targets, reduction="none")


@torch.no_grad()
def _score_rows(
    model: DiffusionLM,
    rows: list[_Row],
    *,
    batch_size: int,
    pad_id: int,
    progress: Callable[[int], None] | None,
) -> list[float]:
    """Mean masked cross-entropy of each row, in micro-batches of similar length."""
    device = model.device
    results = torch.zeros(len(rows), dtype=torch.float64)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].ids))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        lengths = torch.tensor([len(rows[i].ids) for i in chunk])
        ids = pad_sequence([torch.tensor(rows[i].ids) for i in chunk], batch_first=True, padding_value=pad_id)
        keep = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
        counts = torch.tensor([len(rows[i].masked) for i in chunk])
        batch_rows = torch.repeat_interleave(torch.arange(len(chunk)), counts)
        positions = torch.tensor([p for i in chunk for p in rows[i].masked])
        clean = ids.clone()
        targets = ids[batch_rows, positions].clone()
        ids[batch_rows, positions] = model.mask_id
        attention = None if bool(keep.all()) else keep.long().to(device)
        losses = _masked_losses(model, ids.to(device), clean.to(device), attention, batch_rows.to(device),
                                positions.to(device), targets.to(device))
        sums = torch.zeros(len(chunk), dtype=torch.float64).index_add_(0, batch_rows, losses.double().cpu())
        results[torch.tensor(chunk)] = sums / counts.clamp(min=1)
        if progress is not None:
            progress(len(chunk))
    return results.tolist()


def score_continuations(
    model: DiffusionLM,
    contexts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    *,
    steps: int = 32,
    seed: int = 0,
    estimator: str = "original",
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """The likelihood score (average over levels of mean masked CE) of each continuation given its context.

    A level that masks nothing (``original`` estimator only) adds 0 and needs no forward pass.
    """
    if steps < 1:
        raise UserInputError(f"diffusion_steps must be >= 1, got {steps}")
    if len(contexts) != len(continuations):
        raise UserInputError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    rows, empty_levels, masks_of_length = [], 0, {}
    for owner, (context, continuation) in enumerate(zip(contexts, continuations)):
        if not continuation:
            raise UserInputError(f"continuation {owner} is empty; nothing to score")
        if len(context) < first_predicted_token(model.shift):
            raise UserInputError(f"context {owner} is empty; with shift the first token must be given (e.g. BOS)")
        ids = list(context) + list(continuation)
        n = len(continuation)
        if n not in masks_of_length:
            masks_of_length[n] = level_masks(n, steps, seed, estimator)
        for positions in masks_of_length[n]:
            if positions:
                rows.append(_Row(owner, ids, [len(context) + p for p in positions]))
            else:
                empty_levels += 1
    if progress is not None and empty_levels:
        progress(empty_levels)
    row_scores = _score_rows(model, rows, batch_size=batch_size, pad_id=_pad_id(model), progress=progress)
    totals = [0.0] * len(contexts)
    for row, value in zip(rows, row_scores):
        totals[row.owner] += value / steps
    return totals


def sequence_nll(
    model: DiffusionLM,
    sequences: Sequence[Sequence[int]],
    *,
    steps: int = 32,
    seed: int = 0,
    batch_size: int = 32,
    prompt_lengths: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[float, int]]:
    """Deterministic ELBO estimate of each sequence's negative log-likelihood (nats) and its token count.

    With ``T`` levels, ``NLL ~= (1/T) * sum_t (T/t) * sum_{masked at level t} CE`` over the ``exact``
    estimator's masks; tokens before ``prompt_lengths[i]`` (and token 0 under shift) are given, not scored.
    """
    if steps < 1:
        raise UserInputError(f"diffusion_steps must be >= 1, got {steps}")
    rows, weights, counts = [], [], []
    for owner, sequence in enumerate(sequences):
        given = max(prompt_lengths[owner] if prompt_lengths is not None else 0, first_predicted_token(model.shift))
        n = max(len(sequence) - given, 0)
        counts.append(n)
        if n == 0:
            continue
        for level, positions in zip(range(steps, 0, -1), level_masks(n, steps, seed, "exact")):
            rows.append(_Row(owner, list(sequence), [given + p for p in positions]))
            weights.append(len(positions) / level)  # mean CE -> summed CE, times T/level, over T levels
    row_scores = _score_rows(model, rows, batch_size=batch_size, pad_id=_pad_id(model), progress=progress)
    totals = [0.0] * len(sequences)
    for row, value, weight in zip(rows, row_scores, weights):
        totals[row.owner] += value * weight
    return list(zip(totals, counts))


def nll_totals(results: Sequence[tuple[float, int]], device: torch.device | str | None = None) -> torch.Tensor:
    """``[summed NLL (nats), scored tokens]`` of ``sequence_nll`` results as float64, to be summed across
    processes before ``nll_per_token``."""
    return torch.tensor([sum(r[0] for r in results), sum(r[1] for r in results)], dtype=torch.float64,
                        device=device)


def nll_per_token(totals: torch.Tensor) -> float:
    """Mean NLL per scored token (nats) from ``nll_totals`` (summed over processes); 0 with no token."""
    nll, tokens = totals.tolist()
    return nll / max(tokens, 1.0)


def _pad_id(model: DiffusionLM) -> int:
    tokens = model.tokens
    for candidate in (tokens.pad_id, tokens.eos_id, tokens.mask_id):
        if candidate is not None:
            return candidate
    return 0
