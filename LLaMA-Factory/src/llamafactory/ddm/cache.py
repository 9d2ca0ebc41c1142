"""How the reverse loop calls the denoiser: a full forward each step, or with a key/value cache
(docs/design.md#fast-generation).

The cache is transformers' own ``DynamicCache``; nothing in the attention code is patched. Attention is
bidirectional, so the order in which keys are stored does not matter as long as every token keeps its
own position id. A *refresh* runs the full sequence once with the recomputed window moved to the end,
keeps those logits for the current step, and crops the window's keys and values off the cache; each
later step runs only the window against the cached rest and crops it off again.

- ``none``: every step is a full forward (the original recipe).
- ``prefix``: cached = everything before the window; the window runs from the current block to the end.
- ``dual``: cached = everything outside the current block; the window is the block alone.
- ``block``: the *exact* cache of a block model (``DiffusionLM.block_size``, docs/design.md#block-diffusion).
  Attention is block-causal, so the keys and values of finished blocks never change: at each block start
  the columns not yet cached (the prompt, the finished block) run once, clean, block-causal, and are
  appended for good; each step runs only the block against them and drops the block's own keys again.
  Under shift the block's first token is predicted by the output at the last cached column, kept from the
  forward that cached it. It gives the tokens of ``none``, which for a block model recomputes the whole
  sequence under the block-causal mask each step.
- ``auto`` (the default): ``block`` for a block model, ``none`` otherwise (resolved by the sampler).

Under shift the output at ``i`` predicts token ``i + 1``, so the window also holds the column just
before the block. Cached keys and values are those of the last refresh (at each block start and, with
``refresh_every``, every that many steps): an approximation, since bidirectional keys depend on every
token; ``refresh_every=1`` recomputes everything each step and equals ``none``. ``prefix`` and ``dual``
are for full-sequence models only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import DynamicCache

from .attention import block_causal_mask, position_ids
from .model import DiffusionLM, align_to_tokens, predicting_output

CACHE_MODES = ("auto", "none", "prefix", "dual", "block")
APPROXIMATE_CACHES = ("prefix", "dual")


def _rows(mask: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    """The rows ``rows`` of a per-row mask (a mask shared by the batch, or none, stays as it is)."""
    return mask if mask is None or mask.shape[0] == 1 else mask[rows]


def _subset(cache: DynamicCache, rows: torch.Tensor) -> DynamicCache:
    """A copy of the rows ``rows`` of ``cache`` (rows that wait for the others stay out of a forward)."""
    return DynamicCache(ddp_cache_data=[(keys[rows], values[rows]) for keys, values, _ in cache])


class DenoiserCalls:
    """Logits for the tokens of the current block ``[start, end)``, one call per reverse step.

    ``denoiser`` is a :class:`DiffusionLM` (every mode), or any callable mapping token ids ``[B, L]`` to
    logits ``[B, L, vocab]`` (mode ``none`` only; it then handles its own attention mask).
    """

    def __init__(self, denoiser: DiffusionLM | Callable[[torch.Tensor], torch.Tensor], *, mode: str, shift: bool,
                 attention_mask: torch.Tensor | None, refresh_every: int | None) -> None:
        self.denoiser = denoiser
        self.model = denoiser.causal_lm() if isinstance(denoiser, DiffusionLM) else None
        if self.model is None and (mode != "none" or attention_mask is not None):
            raise TypeError("a key/value cache or an attention mask needs a DiffusionLM, not a plain denoiser callable")
        self.mode, self.shift, self.refresh_every = mode, shift, refresh_every
        self.block_size = denoiser.block_size if isinstance(denoiser, DiffusionLM) else None
        self.attention_mask = attention_mask
        self.cache: DynamicCache | None = None
        self.ordered_mask: torch.Tensor | None = None  # the padding mask in the cache's column order
        self.start = self.end = self.steps = 0
        self.cached = 0  # block mode: columns [0, cached) are in the cache for good
        self.last: torch.Tensor | None = None  # block mode, shift: each row's output at column cached - 1

    def start_block(self, start: int, end: int, tokens: torch.Tensor) -> None:
        """Move to the block ``[start, end)`` of ``tokens``; in block mode the columns before it that are not
        cached yet (finished) are cached now, else the next call refreshes the cache."""
        self.start, self.end, self.steps = start, end, 0
        if self.mode != "block":
            self.cache = None
            return
        if self.cache is None:
            self.cache = DynamicCache(config=self.model.config)
        if start > self.cached:
            columns = torch.arange(self.cached, start, device=tokens.device)
            last = self._forward(tokens, self._block_mask(tokens, self.cached, start), self.attention_mask, columns,
                                 self.cache, torch.tensor([len(columns) - 1], device=tokens.device))
            self.cached, self.last = start, last[:, 0]

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Drop every batch row not in ``rows`` (finished rows leave the forward batch)."""
        self.attention_mask = _rows(self.attention_mask, rows)
        self.ordered_mask = _rows(self.ordered_mask, rows)
        if self.cache is not None:
            self.cache.batch_select_indices(rows)
        if self.last is not None:
            self.last = self.last[rows]

    def admit(self, other: DenoiserCalls, rows: int, added: int) -> None:
        """Append ``other``'s ``added`` batch rows after this batch's ``rows`` (mode ``none``, 2D padding masks;
        a missing mask is all ones)."""
        if self.mode != "none" or other.mode != "none":
            raise ValueError("rows can join a batch only without a key/value cache")
        present = [m for m in (self.attention_mask, other.attention_mask) if m is not None]
        if not present:
            return
        width, device = present[0].shape[1], present[0].device

        def filled(mask: torch.Tensor | None, count: int) -> torch.Tensor:
            return torch.ones((count, width), dtype=torch.bool, device=device) if mask is None else mask.bool()

        self.attention_mask = torch.cat([filled(self.attention_mask, rows), filled(other.attention_mask, added)])

    def __call__(self, tokens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``[rows.sum(), end - start, vocab]`` logits of the batch rows flagged in ``rows``: row ``j`` predicts
        the token at column ``start + j``. Only those rows run, except in a refresh, which rebuilds the cache
        of every row."""
        width = self.end - self.start
        if self.model is None:  # a plain callable sees the whole batch it was built for
            logits = align_to_tokens(self.denoiser(tokens), self.shift)[rows, self.start : self.end]
        else:
            first = int(predicting_output(self.start, self.shift))
            if self.mode == "none":
                padding = _rows(self.attention_mask, rows)
                columns = torch.arange(tokens.shape[1], device=tokens.device)
                wanted = torch.arange(first, first + width, device=tokens.device)
                mask = padding if self.block_size is None else self._block_mask(tokens[rows], 0, tokens.shape[1], padding)
                logits = self._forward(tokens[rows], mask, padding, columns, None, wanted)
            elif self.mode == "block":
                logits = self._block_step(tokens, rows)
            else:
                logits = self._cached(tokens, rows, first, width)
        self.steps += 1
        return logits

    def _cached(self, tokens: torch.Tensor, rows: torch.Tensor, first: int, width: int) -> torch.Tensor:
        length = tokens.shape[1]
        window_end = length if self.mode == "prefix" else self.end
        window = torch.arange(first, window_end, device=tokens.device)
        if self.cache is None or (self.refresh_every is not None and self.steps % self.refresh_every == 0):
            outside = torch.cat([torch.arange(0, first), torch.arange(window_end, length)]).to(tokens.device)
            order = torch.cat([outside, window])
            self.cache = DynamicCache(config=self.model.config)
            self.ordered_mask = None if self.attention_mask is None else self.attention_mask[:, order]
            keep = torch.arange(len(outside), len(outside) + width, device=tokens.device)
            logits = self._forward(tokens, self.ordered_mask, self.attention_mask, order, self.cache, keep)[rows]
            self.cache.crop(-len(window))
            return logits
        keep = torch.arange(width, device=tokens.device)
        if bool(rows.all()):
            logits = self._forward(tokens, self.ordered_mask, self.attention_mask, window, self.cache, keep)
            self.cache.crop(-len(window))
            return logits
        return self._forward(tokens[rows], _rows(self.ordered_mask, rows), _rows(self.attention_mask, rows), window,
                             _subset(self.cache, rows), keep)

    def _block_mask(self, tokens: torch.Tensor, start: int, end: int,
                    padding: torch.Tensor | None = None) -> torch.Tensor:
        """Block-causal mask of the queries ``[start, end)`` over the keys ``[0, end)``."""
        padding = self.attention_mask if padding is None else padding
        padding = None if padding is None else padding[:, :end]
        positions = position_ids(padding, tokens[:, :end].shape, tokens.device)
        return block_causal_mask(positions, self.block_size, attention_mask=padding, dtype=self.model.dtype,
                                 start=start)

    def _block_step(self, tokens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Block mode: the current block of the rows ``rows`` against the cached columns before it; the block's
        own keys and values leave the cache again."""
        width, cached = self.end - self.start, self.cached
        padding = _rows(self.attention_mask, rows)
        columns = torch.arange(self.start, self.end, device=tokens.device)
        keep = torch.arange(width - 1 if self.shift else width, device=tokens.device)
        cache = None if cached == 0 else self.cache if bool(rows.all()) else _subset(self.cache, rows)
        logits = self._forward(tokens[rows], self._block_mask(tokens[rows], self.start, self.end, padding), padding,
                               columns, cache, keep)
        if cache is not None:
            cache.crop(-width)
        if not self.shift:
            return logits
        first = logits[:, :1] if self.last is None else self.last[rows][:, None]
        return torch.cat([first, logits], dim=1)

    def _forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None, padding: torch.Tensor | None,
                 columns: torch.Tensor, cache: DynamicCache | None, keep: torch.Tensor) -> torch.Tensor:
        """Run the columns ``columns`` of ``tokens`` (in that order) and return the outputs at ``keep``.

        ``attention_mask`` is in the order the keys are stored (cache, then ``columns``); ``padding`` in
        column order, for the position ids."""
        positions = position_ids(padding, tokens.shape, tokens.device)[:, columns]
        return self.model(input_ids=tokens[:, columns], attention_mask=attention_mask, position_ids=positions,
                          cache=cache, use_cache=cache is not None, logits_to_keep=keep).logits
