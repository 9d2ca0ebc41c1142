"""Reverse diffusion (docs/design.md#sampling, #fast-generation): the one loop every entry point uses.

Each step predicts the positions of the current *block* (a window of columns; by default the whole
generated region), draws a candidate token and its confidence there, and asks a *rule*
(``strategies.py``) which masked positions to fix now. Given positions (``src_mask``) never change; after
a block's last step no mask is left in it. Blocks run left to right and share the step budget in
proportion to their width; a cache mode (``cache.py``) says how the denoiser is called. Every random
draw of a row comes from that row's own generator, prompts of different lengths are aligned on their
first generated column, and finished rows leave the batch, so a row's result does not depend on what
else is in the batch. For a block model (``DiffusionLM.block_size``) blocks follow position ids instead:
every row is moved left so that its position ``p`` sits at column ``p``, and block ``k`` is the columns
``[k * block_length, (k + 1) * block_length)`` of every row (docs/design.md#block-diffusion).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from ..errors import UserInputError
from .cache import APPROXIMATE_CACHES, DenoiserCalls
from .model import DiffusionLM, first_predicted_token
from .proposals import nucleus_filter, propose
from .settings import SamplingConfig
from .strategies import Step

Denoiser = Callable[[torch.Tensor], torch.Tensor]

__all__ = ["Denoiser", "SamplingOutput", "begin", "nucleus_filter", "sample"]


@dataclass
class SamplingOutput:
    tokens: torch.Tensor  # [B, L]
    history: list[torch.Tensor] = field(default_factory=list)  # per step, on CPU, when recorded
    nfe: torch.Tensor | None = None  # [B]: denoiser evaluations each row needed


def _generators(
    generator: torch.Generator | Sequence[torch.Generator] | None, batch_size: int
) -> list[torch.Generator | None]:
    if generator is None or isinstance(generator, torch.Generator):
        return [generator] * batch_size
    generators = list(generator)
    if len(generators) != batch_size:
        raise UserInputError(f"got {len(generators)} generators for a batch of {batch_size} rows")
    return generators


def _given_positions(input_ids: torch.Tensor, src_mask: torch.Tensor | None, padding: torch.Tensor | None,
                     shift: bool, mask_id: int) -> torch.Tensor:
    """Positions never generated: ``src_mask``, padding, and under shift each row's first real token."""
    given = torch.zeros_like(input_ids, dtype=torch.bool) if src_mask is None else src_mask.bool().clone()
    real = torch.ones_like(given) if padding is None else padding.bool()
    first = real.long().argmax(dim=1, keepdim=True)
    lead = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :] - first
    given |= ~real | ((lead >= 0) & (lead < first_predicted_token(shift)))
    if (given & real & (input_ids == mask_id)).any():
        raise UserInputError(
            "a given position holds the mask token (under shift token 0 is always given: start each row with BOS)"
        )
    return given


@dataclass
class _Layout:
    """Rows moved right so that their first generated columns coincide (only when blocks or a cache need it),
    or, for a block model, left so that each row's first real token is at column 0."""

    offsets: torch.Tensor  # [B]: columns each row moved right (negative: left)
    width: int  # the caller's sequence length

    def align(self, values: torch.Tensor, fill: int | bool) -> torch.Tensor:
        width = self.width + max(int(self.offsets.max()), 0)
        columns = torch.arange(width, device=values.device)[None, :] - self.offsets[:, None]
        inside = (columns >= 0) & (columns < self.width)
        picked = values.gather(1, columns.clamp(0, self.width - 1))
        return torch.where(inside, picked, torch.full_like(picked, fill))

    def restore(self, values: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """``values`` back in the caller's columns; columns no aligned column came from keep ``original``."""
        columns = torch.arange(self.width, device=values.device)[None, :] + self.offsets[:, None].to(values.device)
        inside = (columns >= 0) & (columns < values.shape[1])
        picked = values.gather(1, columns.clamp(0, values.shape[1] - 1))
        return torch.where(inside, picked, original.to(values.device))


def _block_model_layout(padding: torch.Tensor | None) -> _Layout | None:
    """The layout of a block model: each row moved left by its leading padding, so that position ids (counted
    over real tokens) equal columns; real tokens must be contiguous (left or right padding)."""
    if padding is None:
        return None
    real = padding.bool()
    length = real.shape[1]
    first = real.long().argmax(dim=1)
    last = length - 1 - real.flip(1).long().argmax(dim=1)
    if bool((real.sum(dim=1) != last - first + 1).any()):
        raise UserInputError("a block model needs each row's real tokens in one run (left or right padding only)")
    return None if not bool(first.any()) else _Layout(offsets=-first, width=length)


def _blocks(generated: torch.Tensor, start: int, block: int) -> torch.Tensor:
    """``[B, blocks]``: how many generated positions of each row the blocks ``[start + k block, ...)`` hold."""
    length = generated.shape[1]
    blocks = -(-(length - start) // block)
    padded = torch.nn.functional.pad(generated[:, start:], (0, blocks * block - (length - start)))
    return padded.view(generated.shape[0], blocks, block).sum(dim=2)


def _block_steps(generated: torch.Tensor, start: int, block: int, steps: int) -> torch.Tensor:
    """``[B, blocks]`` steps of each row's blocks: the budget split in proportion to the columns each block
    covers of the row's generated span (cumulative rounding, so a row's blocks use exactly ``steps``)."""
    length = generated.shape[1]
    blocks = -(-(length - start) // block)
    first = generated.long().argmax(dim=1)[:, None]
    last = length - 1 - generated.flip(1).long().argmax(dim=1)[:, None]
    span = (last - first + 1).clamp(min=1)
    edges = (torch.arange(blocks + 1, device=generated.device)[None, :] * block + start - first).clamp(min=0)
    edges = edges.minimum(span)
    quota = torch.div(steps * edges, span, rounding_mode="floor")
    return quota[:, 1:] - quota[:, :-1]


@dataclass
class _Plan:
    """Where the blocks are: the (possibly realigned) rows, the first generated column, the block width and
    each row's steps per block."""

    input_ids: torch.Tensor
    generated: torch.Tensor
    padding: torch.Tensor | None
    layout: _Layout | None
    start: int
    block: int
    steps_per_block: torch.Tensor


def _plan(input_ids: torch.Tensor, generated: torch.Tensor, padding: torch.Tensor | None, config: SamplingConfig,
          fill_id: int, full_mask: bool, block_size: int | None) -> _Plan:
    """Blocks start at the first generated column; rows that start elsewhere are moved right when blocks or a
    cache would otherwise cut them differently from a run of that row alone. A block model's blocks start at
    column 0 of rows laid out by position (``_block_model_layout``)."""
    if block_size is not None:
        layout = _block_model_layout(padding)
        if layout is not None:
            input_ids, generated = layout.align(input_ids, fill_id), layout.align(generated, False)
            padding = layout.align(padding, False)
        return _checked_plan(input_ids, generated, padding, layout, 0, config.block_length, config.steps)
    length = generated.shape[1]
    working = generated.any(dim=1)
    first = torch.where(working, generated.long().argmax(dim=1), length)
    last = torch.where(working, length - 1 - generated.flip(1).long().argmax(dim=1), -1)
    start = int(first.min())
    one_block = config.block_length is None or bool(((last - first + 1) <= config.block_length).all())
    layout = None
    if bool((first[working] != start).any()) and (config.cache != "none" or not one_block):
        if full_mask:
            raise UserInputError("rows that start generating at different columns cannot be aligned under a 4D "
                                 "attention mask; use one block and cache=none")
        start = int(first[working].max())
        layout = _Layout(offsets=torch.where(working, start - first, 0), width=length)
        input_ids = layout.align(input_ids, fill_id)
        padding = layout.align(torch.ones_like(generated) if padding is None else padding, False)
        generated = layout.align(generated, False)
        length = input_ids.shape[1]
    block = max(length - start, 1) if one_block else config.block_length
    return _checked_plan(input_ids, generated, padding, layout, start, block, config.steps)


def _checked_plan(input_ids: torch.Tensor, generated: torch.Tensor, padding: torch.Tensor | None,
                  layout: _Layout | None, start: int, block: int, steps: int) -> _Plan:
    """The plan of blocks ``[start + k block, ...)``, once the step budget covers every block a row needs."""
    steps_per_block = _block_steps(generated, start, block, steps)
    holds = _blocks(generated, start, block) > 0
    if bool(((steps_per_block == 0) & holds).any()):
        raise UserInputError(
            f"steps={steps} is fewer than the blocks a row needs: block_length={block} cuts a row's generated "
            f"span into {int(holds.sum(dim=1).max())} blocks; raise steps or block_length"
        )
    if padding is not None and bool(padding.all()):
        padding = None
    return _Plan(input_ids, generated, padding, layout, start, block, steps_per_block)


def _for_model(config: SamplingConfig, denoiser: DiffusionLM | Denoiser) -> tuple[SamplingConfig, int | None]:
    """``config`` with ``cache="auto"`` and (for a block model) ``block_length`` resolved for this denoiser, and
    the model's block size; one error line where the cache or block length does not fit the model."""
    block_size = denoiser.block_size if isinstance(denoiser, DiffusionLM) else None
    if block_size is None:
        if config.cache == "block":
            raise UserInputError("cache='block' is the exact cache of a block model (block_size set); this model is "
                                 "full-sequence: use cache=none, prefix or dual")
        return (replace(config, cache="none") if config.cache == "auto" else config), None
    if config.cache in APPROXIMATE_CACHES:
        raise UserInputError(f"cache={config.cache!r} approximates a full-sequence model; this block model "
                             f"(block_size={block_size}) has an exact cache: use cache=block (or auto) or none")
    length = block_size if config.block_length is None else config.block_length
    if length % block_size:
        raise UserInputError(f"block_length={length} must be a multiple of the model's block_size={block_size}")
    return replace(config, cache="block" if config.cache == "auto" else config.cache, block_length=length), block_size


@torch.no_grad()
def sample(
    denoiser: DiffusionLM | Denoiser,
    input_ids: torch.Tensor,
    mask_id: int,
    config: SamplingConfig,
    *,
    src_mask: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    progress: Callable[[int], None] | None = None,
) -> SamplingOutput:
    """Fill every non-given position of ``input_ids`` ``[B, L]`` by at most ``config.steps`` reverse steps.

    ``denoiser`` is a :class:`DiffusionLM` or a callable mapping ids ``[B, L]`` to raw logits
    ``[B, L, vocab]`` (one block per row, no cache). ``src_mask`` (True = given) may differ per row;
    ``attention_mask`` is a 2D padding mask (0 = padding, never generated) or, with one block per row
    and no cache, a 4D additive mask. ``generator`` is one generator, or one per row for
    batch-independent results. ``progress`` is called after each step.
    """
    state = begin(denoiser, input_ids, mask_id, config, src_mask=src_mask, attention_mask=attention_mask,
                  generator=generator)
    while state.step():
        if progress is not None:
            progress(1)
    return state.output()


def begin(
    denoiser: DiffusionLM | Denoiser,
    input_ids: torch.Tensor,
    mask_id: int,
    config: SamplingConfig,
    *,
    src_mask: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> _State:
    """The reverse loop before its first step (arguments as for :func:`sample`, which steps it to the end).

    A caller that steps it itself (a server) may admit other such states' rows between steps
    (``_State.admit``), drop rows (``drop``) and hand back finished ones (``release``)."""
    config.validate()
    config, block_size = _for_model(config, denoiser)
    full_mask = attention_mask is not None and attention_mask.dim() == 4
    if full_mask and (config.cache != "none" or block_size is not None):
        raise UserInputError(f"cache={config.cache!r} cannot be used with a 4D (annealing) attention mask; use cache=none"
                             if block_size is None else "a block model builds its own attention mask: pass a 2D "
                             "padding mask, not a 4D one")
    padding = None if attention_mask is None or full_mask else attention_mask.bool()
    generated = ~_given_positions(input_ids, src_mask, padding, config.shift, mask_id)
    plan = _plan(input_ids, generated, padding, config, 1 if mask_id == 0 else 0, full_mask, block_size)
    return _State(denoiser, plan, attention_mask if full_mask else plan.padding,
                  _generators(generator, input_ids.shape[0]), mask_id, config, original=input_ids)


class _State:
    """The rows still being generated, their tokens and masks, and where they are: the current block
    ``[left, right)`` and each row's step within it. Finished rows are written to ``final`` and leave the batch.

    Rows are numbered in the order they came in (``final``, ``nfe``); ``rows`` are the live ones. Between
    steps, rows of another state may join (``admit``) where they can share the forward, which leaves each
    row's result as it would be alone: its draws come from its own generator and its step count is its own.
    """

    def __init__(self, denoiser: DiffusionLM | Denoiser, plan: _Plan, attention_mask: torch.Tensor | None,
                 generators: list[torch.Generator | None], mask_id: int, config: SamplingConfig, *,
                 original: torch.Tensor) -> None:
        self.config, self.mask_id, self.rule, self.denoiser = config, mask_id, config.rule(), denoiser
        self.original = original  # the caller's ids: where a realigned row has no column, output keeps them
        self.layout, self.full_mask = plan.layout, attention_mask is not None and attention_mask.dim() == 4
        input_ids, self.generated = plan.input_ids, plan.generated
        self.masked = self.generated.clone()
        self.tokens = torch.where(self.masked, torch.full_like(input_ids, mask_id), input_ids)
        self.final = self.tokens.clone()
        self.history = [self.final.to("cpu", copy=True)] if config.record_history else []
        self.rows = torch.arange(input_ids.shape[0], device=input_ids.device)  # original index of each live row
        self.generators = generators
        self.start, self.width, self.steps_per_block = plan.start, plan.block, plan.steps_per_block
        self.block_maskable = self.masked[:, :0]
        self.nfe = torch.zeros(input_ids.shape[0], dtype=torch.long)
        self.calls = DenoiserCalls(denoiser, mode=config.cache, shift=config.shift, attention_mask=attention_mask,
                                   refresh_every=config.cache_refresh)
        self.eos_id, self.fill_id = _end_tokens(denoiser, config)
        self.index, self.left, self.right = -1, plan.start, plan.start
        self.block_step = torch.zeros_like(self.rows)  # each live row's steps in the current block
        self._keep(self.masked.any(dim=1))

    def step(self) -> bool:
        """One reverse step of the live rows still working on the current block, moving to the next block
        first where every row has finished this one; False when nothing is left to generate."""
        working = self._advance()
        if working is None:
            return False
        budget = self.steps_per_block[self.rows, self.index]
        # Rows waiting here (a block holding only their prompt has no budget) neither decide nor divide by zero.
        self._decide(working, (budget - 1 - self.block_step).clamp(min=0), budget.clamp(min=1))
        self.block_step += 1
        self._after_step()
        return True

    def output(self) -> SamplingOutput:
        """Every row's tokens (in the caller's columns), history and NFE."""
        tokens, history = self.final, self.history
        if self.layout is not None:
            tokens = self.layout.restore(tokens, self.original)
            history = [self.layout.restore(h, self.original) for h in history]
        return SamplingOutput(tokens=tokens, history=history, nfe=self.nfe)

    def joinable(self, other: _State) -> bool:
        """Whether ``other``'s live rows can join this batch before its next step: the same denoiser, settings,
        columns and blocks, no key/value cache and no 4D mask (those are built for one batch's rows), no
        history, and both at the same block. Both move into the block their next step works on."""
        if other.denoiser is not self.denoiser or other.config != self.config or self.config.cache != "none":
            return False
        if self.full_mask or other.full_mask or self.config.record_history or self.layout or other.layout:
            return False
        shape = (self.tokens.shape[1], self.start, self.width, self.steps_per_block.shape[1])
        if shape != (other.tokens.shape[1], other.start, other.width, other.steps_per_block.shape[1]):
            return False
        return self._advance() is not None and other._advance() is not None and self.index == other.index

    def admit(self, other: _State) -> int:
        """Take ``other``'s live rows into this batch (``joinable`` must hold); returns the number of
        ``other``'s row 0 here (its row ``i`` is that plus ``i``)."""
        if not self.joinable(other):
            raise ValueError("these rows cannot share this batch's forward (see _State.joinable)")
        offset = self.final.shape[0]
        self.rows = torch.cat([self.rows, other.rows + offset])
        self.tokens, self.masked = torch.cat([self.tokens, other.tokens]), torch.cat([self.masked, other.masked])
        self.block_maskable = torch.cat([self.block_maskable, other.block_maskable])
        self.block_step = torch.cat([self.block_step, other.block_step])
        self.generators = [*self.generators, *other.generators]
        self.final, self.generated = torch.cat([self.final, other.final]), torch.cat([self.generated, other.generated])
        self.steps_per_block = torch.cat([self.steps_per_block, other.steps_per_block])
        self.nfe = torch.cat([self.nfe, other.nfe])
        self.calls.admit(other.calls, self.tokens.shape[0] - other.tokens.shape[0], other.tokens.shape[0])
        return offset

    def drop(self, rows: Sequence[int]) -> None:
        """Stop generating the rows numbered ``rows`` (a client went away); ``final`` keeps what they have."""
        self._keep(~torch.isin(self.rows, torch.as_tensor(list(rows), dtype=self.rows.dtype, device=self.rows.device)))

    def release(self, rows: Sequence[int]) -> None:
        """Forget the rows numbered ``rows`` (dropping them first where live); later rows move down to fill
        the gaps, keeping their order."""
        self.drop(rows)
        gone = torch.zeros(self.final.shape[0], dtype=torch.bool, device=self.rows.device)
        gone[list(rows)] = True
        kept = (~gone).nonzero(as_tuple=True)[0]
        self.rows = ((~gone).long().cumsum(dim=0) - 1)[self.rows]
        self.final, self.generated = self.final[kept], self.generated[kept]
        self.steps_per_block, self.nfe = self.steps_per_block[kept], self.nfe[kept.cpu()]
        self.history = [h[kept.cpu()] for h in self.history]

    def _advance(self) -> torch.Tensor | None:
        """The rows the next step works on, moving to the next block first where every row has finished this
        one; None when nothing is left to generate."""
        working = self._working()
        while not working.any():
            if self.index >= 0:
                self._keep(self.masked.any(dim=1))
            if not self._next_block():
                return None
            working = self._working()
        return working

    def _working(self) -> torch.Tensor:
        """Rows with masks left in the block and steps left in their budget for it."""
        if self.index < 0 or not self.rows.numel():
            return torch.zeros_like(self.rows, dtype=torch.bool)
        budget = self.steps_per_block[self.rows, self.index]
        return self.masked[:, self.left : self.right].any(dim=1) & (self.block_step < budget)

    def _next_block(self) -> bool:
        """Move to the next block holding a mask of a live row; False after the last block."""
        length = self.tokens.shape[1]
        while self.rows.numel():
            self.index += 1
            self.left = self.start + self.index * self.width
            if self.left >= length:
                return False
            self.right = min(self.left + self.width, length)
            if self.masked[:, self.left : self.right].any():
                self.calls.start_block(self.left, self.right, self.tokens)
                self.block_maskable = self.masked[:, self.left : self.right].clone()
                self.block_step = torch.zeros_like(self.rows)
                return True
        return False

    def _decide(self, working: torch.Tensor, steps_left: torch.Tensor, budget: torch.Tensor) -> None:
        """Draw candidates for the rows in ``working`` and fix the positions the rule picks (all that are
        left at a row's last step of the block)."""
        left, right, rule = self.left, self.right, self.rule
        logits = self.calls(self.tokens, working)  # the working rows only
        masked = self.masked[:, left:right] & working[:, None]
        maskable = self.block_maskable & working[:, None]
        rows, cols = (maskable if rule.scores_fixed else masked).nonzero(as_tuple=True)
        among_working = working.long().cumsum(dim=0) - 1
        proposal = propose(logits[among_working[rows], cols], self.config, self.generators, rows, self.mask_id,
                           with_entropy=rule.needs_entropy)
        deciding = (steps_left > 0)[:, None]
        fix = masked & ~deciding
        if bool((deciding & masked).any()):
            confidence = torch.full(masked.shape, -torch.inf, device=masked.device)
            confidence[rows, cols] = proposal.confidence
            entropy = None
            if proposal.entropy is not None:
                entropy = torch.full(masked.shape, torch.inf, device=masked.device)
                entropy[rows, cols] = proposal.entropy
            step = Step(masked=masked & deciding, maskable=maskable & deciding, confidence=confidence,
                        entropy=entropy, steps_left=steps_left, total=budget, generators=self.generators,
                        settings=self.config)
            fix |= rule(step) & masked & deciding
        candidates = self.tokens[:, left:right].clone()
        candidates[rows, cols] = proposal.tokens
        self.tokens[:, left:right] = torch.where(fix, candidates, self.tokens[:, left:right])
        self.masked[:, left:right] &= ~fix
        self.nfe[self.rows[working].cpu()] += 1

    def _after_step(self) -> None:
        done = self._stop_at_eos() if self.config.stop_at_eos else torch.zeros_like(self.rows, dtype=torch.bool)
        self.final[self.rows] = self.tokens
        if self.config.record_history:
            self.history.append(self.final.to("cpu", copy=True))
        self._keep(self.masked.any(dim=1) & ~done)

    def _stop_at_eos(self) -> torch.Tensor:
        """Rows with a fixed EOS and no mask before it: everything generated after the EOS becomes padding."""
        generated = self.generated[self.rows]
        columns = torch.arange(self.tokens.shape[1], device=self.tokens.device)[None, :]
        end = self.tokens.shape[1]
        eos_at = torch.where(generated & ~self.masked & (self.tokens == self.eos_id), columns, end).amin(1, keepdim=True)
        first_mask = torch.where(self.masked, columns, end).amin(dim=1, keepdim=True)
        done = (eos_at < end) & (first_mask > eos_at)
        after = done & (columns > eos_at) & generated
        self.tokens = torch.where(after, torch.full_like(self.tokens, self.fill_id), self.tokens)
        self.masked &= ~after
        return done.squeeze(1)

    def _keep(self, alive: torch.Tensor) -> None:
        """Keep only the rows flagged in ``alive`` in the batch and the cache."""
        if bool(alive.all()):
            return
        kept = alive.nonzero(as_tuple=True)[0]
        self.rows, self.tokens, self.masked = self.rows[kept], self.tokens[kept], self.masked[kept]
        self.block_maskable, self.block_step = self.block_maskable[kept], self.block_step[kept]
        self.generators = [self.generators[i] for i in kept.tolist()]
        self.calls.keep_rows(kept)


def _end_tokens(denoiser: object, config: SamplingConfig) -> tuple[int, int]:
    """The EOS id that ends a row and the id written after it (pad, else EOS) under ``stop_at_eos``."""
    if not config.stop_at_eos:
        return -1, -1
    tokens = getattr(denoiser, "tokens", None)
    eos = None if tokens is None else tokens.eos_id
    if eos is None:
        raise UserInputError("stop_at_eos needs the model's EOS token, and this model has none")
    return eos, tokens.pad_id if tokens.pad_id is not None else eos
