"""Forward corruption, the ELBO-weighted loss and the annealed attention mask (docs/design.md#objective, #attention-mask-annealing).

Absorbing-state (masked) discrete diffusion with the linear schedule ``alpha_t = 1 - t``: a sequence at
noise level ``t`` has each non-given token replaced by the mask token with probability ``t``; the
denoiser is trained with cross-entropy on masked positions, each weighted by ``1 / t``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..errors import UserInputError
from .model import align_to_outputs, first_predicted_token

EPS = 1e-3


@dataclass
class DiffusionLoss:
    """ELBO-weighted loss (optimised), unweighted masked CE (reported) and the masked-token count."""

    loss: torch.Tensor
    unweighted_loss: torch.Tensor
    num_masked: torch.Tensor


def noise_seed(seed: int, step: int, micro_step: int, rank: int = 0, world_size: int = 1) -> int:
    """A 63-bit generator seed for one micro-batch's noise (docs/design.md#noise-seeds).

    The seed depends on the run seed, the optimiser step and the micro-batch's global index
    ``micro_step * world_size + rank`` (``rank``/``world_size``: data-parallel), so that N processes with
    gradient accumulation G draw the noise one process draws with accumulation N * G over the same data
    order, and a run resumed at any step draws the noise the uninterrupted run drew.
    """
    index = micro_step * world_size + rank
    digest = hashlib.sha256(f"{seed}:{step}:{index}:0".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def sample_noise_level(
    batch_size: int,
    *,
    eps: float = EPS,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One noise level per sequence, ``t ~ Uniform(eps, 1)``; shape ``[batch]``, float32."""
    u = torch.rand(batch_size, device=device, generator=generator)
    return eps + (1.0 - eps) * u


def maskable_positions(input_ids: torch.Tensor, src_mask: torch.Tensor | None, shift: bool) -> torch.Tensor:
    """Boolean ``[batch, length]``: positions that may be noised (not given; not token 0 under shift)."""
    maskable = torch.ones_like(input_ids, dtype=torch.bool)
    if src_mask is not None:
        if src_mask.shape != input_ids.shape:
            raise UserInputError(
                f"src_mask has shape {tuple(src_mask.shape)}, expected that of input_ids {tuple(input_ids.shape)}"
            )
        maskable &= ~src_mask.bool()
    maskable[:, : first_predicted_token(shift)] = False
    return maskable


def corrupt(
    input_ids: torch.Tensor,
    t: torch.Tensor,
    mask_id: int,
    *,
    src_mask: torch.Tensor | None = None,
    shift: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask each maskable token with probability ``t`` of its row.

    Returns ``(noisy_ids, masked)``, both ``[batch, length]``; ``masked`` marks the replaced tokens.
    """
    draws = torch.rand(input_ids.shape, device=input_ids.device, generator=generator)
    masked = (draws < t.to(draws.dtype)[:, None]) & maskable_positions(input_ids, src_mask, shift)
    return torch.where(masked, torch.full_like(input_ids, mask_id), input_ids), masked


def _chunk_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets, reduction="none")


def masked_cross_entropy(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    *,
    shift: bool = True,
    chunk_size: int = 4096,
) -> torch.Tensor:
    """Per-token cross-entropy (float32) of the masked tokens, in row-major order of ``masked``.

    Only the masked rows of ``logits`` are upcast, ``chunk_size`` rows at a time; with autograd on,
    each chunk is recomputed in backward so the float32 ``[rows, vocab]`` block never lives at once.
    """
    scored = align_to_outputs(masked, shift, False)
    selected = logits[scored]  # [num_masked, vocab], model dtype
    targets = align_to_outputs(input_ids, shift, 0)[scored]
    pieces = []
    for start in range(0, selected.shape[0], chunk_size):
        rows, tgt = selected[start : start + chunk_size], targets[start : start + chunk_size]
        if torch.is_grad_enabled() and rows.requires_grad:
            pieces.append(checkpoint(_chunk_cross_entropy, rows, tgt, use_reentrant=False))
        else:
            pieces.append(_chunk_cross_entropy(rows, tgt))
    if not pieces:
        return logits.new_zeros(0, dtype=torch.float32)
    return torch.cat(pieces)


def diffusion_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    t: torch.Tensor,
    *,
    shift: bool = True,
    chunk_size: int = 4096,
) -> DiffusionLoss:
    """The training objective (docs/design.md#objective) from raw logits of the noisy input.

    ``loss = sum(ce / t) / num_masked`` over the batch; with no masked token it is an exact zero that
    still depends on the logits, so backward and distributed gradient sync keep working.
    """
    token_ce = masked_cross_entropy(logits, input_ids, masked, shift=shift, chunk_size=chunk_size)
    scored = align_to_outputs(masked, shift, False)
    rows = torch.nonzero(scored, as_tuple=True)[0]
    weights = 1.0 / t.float()[rows]
    num_masked = scored.sum()
    if token_ce.numel() == 0:
        zero = logits.sum() * 0.0
        return DiffusionLoss(loss=zero.float(), unweighted_loss=zero.detach().float(), num_masked=num_masked)
    denominator = num_masked.clamp(min=1).float()
    return DiffusionLoss(
        loss=(token_ce * weights).sum() / denominator,
        unweighted_loss=token_ce.detach().sum() / denominator,
        num_masked=num_masked,
    )


def annealed_steps(anneal_steps: int) -> int:
    """How many optimiser steps train with a partly causal attention mask (0: no annealing at all).

    The one reading of the ``anneal_steps`` setting (docs/design.md#attention-mask-annealing): ``0`` (the
    7B trainer's "off") and ``1`` (the stages' "off": the ratio is 1 from step 0) both give 0, ``N >= 2``
    gives ``N - 1`` (steps ``0 .. N-2`` open ``(s + 1) / N < 1`` of the future keys). Every check that
    depends on whether a run anneals asks this function.
    """
    if anneal_steps < 0:
        raise UserInputError(f"anneal_steps must be >= 0 (0 or 1: no annealing), got {anneal_steps}")
    return max(0, anneal_steps - 1)


def anneal_ratio(step: int, anneal_steps: int) -> float:
    """Fraction of future keys opened at optimiser step ``step``: ``min(1, (step + 1) / anneal_steps)``, 1 when off."""
    if annealed_steps(anneal_steps) == 0:
        return 1.0
    return min(1.0, (step + 1) / anneal_steps)


def annealed_attention_mask(
    length: int,
    ratio: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor | None:
    """Additive mask ``[1, 1, length, length]`` allowing ``causal OR Bernoulli(ratio)`` pairs.

    One draw per (query, key) pair, shared across the batch. Returns None at ``ratio >= 1``: full
    attention needs no mask tensor at all (and flash_attention_2 could not take one).
    """
    if ratio >= 1.0:
        return None
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    opened = torch.rand(length, length, device=device, generator=generator) < ratio
    allowed = causal | opened
    mask = torch.zeros(length, length, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


def training_loss(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    mask_id: int,
    *,
    src_mask: torch.Tensor | None = None,
    shift: bool = True,
    anneal: float = 1.0,
    eps: float = EPS,
    generator: torch.Generator | None = None,
    chunk_size: int = 4096,
) -> DiffusionLoss:
    """One diffusion training step's loss for a bidirectional causal LM (DDP/DeepSpeed/peft-wrapped ok).

    Draws ``t``, corrupts ``input_ids`` outside ``src_mask``, runs the model with the annealed mask for
    ratio ``anneal`` (none at 1) and returns the training loss. Calls the model's own forward so that
    distributed wrappers see the step.
    """
    t = sample_noise_level(input_ids.shape[0], eps=eps, device=input_ids.device, generator=generator)
    noisy, masked = corrupt(input_ids, t, mask_id, src_mask=src_mask, shift=shift, generator=generator)
    parameter = next(model.parameters())
    dtype = parameter.dtype if parameter.is_floating_point() else torch.float32
    attention = annealed_attention_mask(
        input_ids.shape[1], anneal, dtype=dtype, device=input_ids.device, generator=generator
    )
    logits = model(input_ids=noisy, attention_mask=attention, use_cache=False).logits
    return diffusion_loss(logits, input_ids, masked, t, shift=shift, chunk_size=chunk_size)
