"""Forward corruption, the ELBO-weighted loss and the annealed attention mask (docs/design.md#objective,
#attention-mask-annealing, #block-diffusion).

Absorbing-state (masked) discrete diffusion with the linear schedule ``alpha_t = 1 - t``: a sequence at
noise level ``t`` has each non-given token replaced by the mask token with probability ``t``; the
denoiser is trained with cross-entropy on masked positions, each weighted by ``1 / t``. Under block
diffusion each block's masked tokens are predicted from the noisy block and the clean blocks before it,
all blocks in one forward of ``[x_t ; x_0]``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..errors import UserInputError
from .attention import block_causal_mask, check_block_size, noisy_clean_mask, position_ids
from .model import align_to_outputs, first_predicted_token, predicting_output

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


def maskable_positions(input_ids: torch.Tensor, src_mask: torch.Tensor | None, shift: bool,
                       attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean ``[batch, length]``: positions that may be noised (not given; not token 0 under shift).

    With a 2D ``attention_mask`` padding is never noised and "token 0" is each row's first real token.
    """
    maskable = torch.ones_like(input_ids, dtype=torch.bool)
    if src_mask is not None:
        if src_mask.shape != input_ids.shape:
            raise UserInputError(
                f"src_mask has shape {tuple(src_mask.shape)}, expected that of input_ids {tuple(input_ids.shape)}"
            )
        maskable &= ~src_mask.bool()
    if attention_mask is None:
        maskable[:, : first_predicted_token(shift)] = False
        return maskable
    if attention_mask.shape != input_ids.shape:
        raise UserInputError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected that of "
                             f"input_ids {tuple(input_ids.shape)} (1 = real token, 0 = padding)")
    real = attention_mask.bool()
    return maskable & real & (position_ids(attention_mask, input_ids.shape, input_ids.device)
                              >= first_predicted_token(shift))


def corrupt(
    input_ids: torch.Tensor,
    t: torch.Tensor,
    mask_id: int,
    *,
    src_mask: torch.Tensor | None = None,
    shift: bool = True,
    generator: torch.Generator | None = None,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask each maskable token with probability ``t`` of its row.

    Returns ``(noisy_ids, masked)``, both ``[batch, length]``; ``masked`` marks the replaced tokens.
    """
    draws = torch.rand(input_ids.shape, device=input_ids.device, generator=generator)
    maskable = maskable_positions(input_ids, src_mask, shift, attention_mask)
    masked = (draws < t.to(draws.dtype)[:, None]) & maskable
    return torch.where(masked, torch.full_like(input_ids, mask_id), input_ids), masked


def _chunk_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets, reduction="none")


def _token_cross_entropy(selected: torch.Tensor, targets: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Float32 cross-entropy of ``[rows, vocab]`` logits (model dtype), ``chunk_size`` rows at a time; with
    autograd on, each chunk is recomputed in backward so the float32 ``[rows, vocab]`` block never lives at once."""
    pieces = []
    for start in range(0, selected.shape[0], chunk_size):
        rows, tgt = selected[start : start + chunk_size], targets[start : start + chunk_size]
        if torch.is_grad_enabled() and rows.requires_grad:
            pieces.append(checkpoint(_chunk_cross_entropy, rows, tgt, use_reentrant=False))
        else:
            pieces.append(_chunk_cross_entropy(rows, tgt))
    if not pieces:
        return selected.new_zeros(0, dtype=torch.float32)
    return torch.cat(pieces)


def masked_cross_entropy(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    *,
    shift: bool = True,
    chunk_size: int = 4096,
) -> torch.Tensor:
    """Per-token cross-entropy (float32) of the masked tokens, in row-major order of ``masked``.

    Only the masked rows of ``logits`` are upcast, ``chunk_size`` rows at a time.
    """
    scored = align_to_outputs(masked, shift, False)
    selected = logits[scored]  # [num_masked, vocab], model dtype
    targets = align_to_outputs(input_ids, shift, 0)[scored]
    return _token_cross_entropy(selected, targets, chunk_size)


def _elbo_loss(logits: torch.Tensor, token_ce: torch.Tensor, rows: torch.Tensor, t: torch.Tensor,
               num_masked: torch.Tensor) -> DiffusionLoss:
    """``sum(ce / t) / num_masked`` from the masked tokens' CE and their batch rows; with no masked token an
    exact zero that still depends on ``logits``, so backward and distributed gradient sync keep working."""
    weights = 1.0 / t.float()[rows]
    if token_ce.numel() == 0:
        zero = logits.sum() * 0.0
        return DiffusionLoss(loss=zero.float(), unweighted_loss=zero.detach().float(), num_masked=num_masked)
    denominator = num_masked.clamp(min=1).float()
    return DiffusionLoss(
        loss=(token_ce * weights).sum() / denominator,
        unweighted_loss=token_ce.detach().sum() / denominator,
        num_masked=num_masked,
    )


def diffusion_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    t: torch.Tensor,
    *,
    shift: bool = True,
    chunk_size: int = 4096,
) -> DiffusionLoss:
    """The training objective (docs/design.md#objective) from raw logits of the noisy input."""
    token_ce = masked_cross_entropy(logits, input_ids, masked, shift=shift, chunk_size=chunk_size)
    scored = align_to_outputs(masked, shift, False)
    rows = torch.nonzero(scored, as_tuple=True)[0]
    return _elbo_loss(logits, token_ce, rows, t, scored.sum())


def block_predicting_outputs(rows: torch.Tensor, columns: torch.Tensor, positions: torch.Tensor, block_size: int,
                             shift: bool) -> torch.Tensor:
    """Column of the ``[x_t ; x_0]`` outputs (``2L``) that predicts the token at each ``(rows, columns)``.

    Without shift: the noisy output at the token. Under shift the output before it: in the noisy half,
    except for the first token of a block, which is predicted from the clean half's output at the last
    position of the block before (as at generation time, when that block is finished).
    """
    source = predicting_output(columns, shift)
    if not shift:
        return source
    starts_block = positions[rows, columns] % block_size == 0
    return torch.where(starts_block, source + positions.shape[1], source)


def block_diffusion_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    masked: torch.Tensor,
    t: torch.Tensor,
    *,
    block_size: int,
    shift: bool = True,
    attention_mask: torch.Tensor | None = None,
    chunk_size: int = 4096,
) -> DiffusionLoss:
    """The block-diffusion objective from raw logits ``[batch, 2L, vocab]`` of ``[x_t ; x_0]``: each masked
    token's CE from its block's conditional (noisy block, clean blocks before it), weighted and normalised
    as ``diffusion_loss``."""
    positions = position_ids(attention_mask, input_ids.shape, input_ids.device)
    rows, columns = torch.nonzero(masked, as_tuple=True)
    sources = block_predicting_outputs(rows, columns, positions, block_size, shift)
    token_ce = _token_cross_entropy(logits[rows, sources], input_ids[rows, columns], chunk_size)
    return _elbo_loss(logits, token_ce, rows, t, masked.sum())


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


def noisy_clean_inputs(
    noisy: torch.Tensor,
    input_ids: torch.Tensor,
    block_size: int,
    *,
    attention_mask: torch.Tensor | None = None,
    opened: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Model inputs of the one block-diffusion forward: ids ``[x_t ; x_0]`` ``[batch, 2L]``, both halves with the
    rows' position ids, and the ``noisy_clean_mask`` (``opened``: the pairs allowed inside a block)."""
    positions = position_ids(attention_mask, input_ids.shape, input_ids.device)
    shared = positions if attention_mask is not None else positions[:1]  # no padding: one mask for the batch
    mask = noisy_clean_mask(shared, block_size, attention_mask=attention_mask, opened=opened, dtype=dtype)
    return {"input_ids": torch.cat([noisy, input_ids], dim=1), "attention_mask": mask,
            "position_ids": positions.repeat(1, 2)}


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
    block_size: int | None = None,
    attention_mask: torch.Tensor | None = None,
) -> DiffusionLoss:
    """One diffusion training step's loss for a bidirectional causal LM (DDP/DeepSpeed/peft-wrapped ok).

    Draws ``t``, corrupts ``input_ids`` outside ``src_mask``, runs the model with the annealed mask for
    ratio ``anneal`` (none at 1) and returns the training loss. Calls the model's own forward so that
    distributed wrappers see the step. ``block_size`` (docs/design.md#block-diffusion): the block ELBO in one
    forward of ``[x_t ; x_0]``, annealing only inside blocks; a block covering the row is the full-sequence
    loss (the same draws, one forward of the row). ``attention_mask`` (2D, 1 = real): padding is hidden from
    attention and never noised or scored; None (the default) attends to every column, as the stages do.
    """
    block_size = check_block_size(block_size)
    t = sample_noise_level(input_ids.shape[0], eps=eps, device=input_ids.device, generator=generator)
    noisy, masked = corrupt(input_ids, t, mask_id, src_mask=src_mask, shift=shift, generator=generator,
                            attention_mask=attention_mask)
    parameter = next(model.parameters())
    dtype = parameter.dtype if parameter.is_floating_point() else torch.float32
    length = input_ids.shape[1]
    annealed = annealed_attention_mask(length, anneal, dtype=dtype, device=input_ids.device, generator=generator)
    if (block_size is None or block_size >= length) and attention_mask is None:
        logits = model(input_ids=noisy, attention_mask=annealed, use_cache=False).logits
        return diffusion_loss(logits, input_ids, masked, t, shift=shift, chunk_size=chunk_size)
    opened = None if annealed is None else annealed[0, 0] == 0
    if block_size is None or block_size >= length:  # one block: the full-sequence loss with padding hidden
        positions = position_ids(attention_mask, input_ids.shape, input_ids.device)
        attention = block_causal_mask(positions, length, attention_mask=attention_mask, opened=opened, dtype=dtype)
        logits = model(input_ids=noisy, attention_mask=attention, position_ids=positions, use_cache=False).logits
        return diffusion_loss(logits, input_ids, masked, t, shift=shift, chunk_size=chunk_size)
    inputs = noisy_clean_inputs(noisy, input_ids, block_size, attention_mask=attention_mask, opened=opened,
                                dtype=dtype)
    logits = model(**inputs, use_cache=False).logits
    return block_diffusion_loss(logits, input_ids, masked, t, block_size=block_size, shift=shift,
                                attention_mask=attention_mask, chunk_size=chunk_size)
