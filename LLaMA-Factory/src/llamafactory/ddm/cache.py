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

Under shift the output at ``i`` predicts token ``i + 1``, so the window also holds the column just
before the block. Cached keys and values are those of the last refresh (at each block start and, with
``refresh_every``, every that many steps): an approximation, since bidirectional keys depend on every
token; ``refresh_every=1`` recomputes everything each step and equals ``none``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import DynamicCache

from .attention import position_ids
from .model import DiffusionLM, align_to_tokens, predicting_output

CACHE_MODES = ("none", "prefix", "dual")


def _rows(mask: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    """The rows ``rows`` of a per-row mask (a mask shared by the batch, or none, stays as it is)."""
    return mask if mask is None or mask.shape[0] == 1 else mask[rows]


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
        self.attention_mask = attention_mask
        self.cache: DynamicCache | None = None
        self.ordered_mask: torch.Tensor | None = None  # the padding mask in the cache's column order
        self.start = self.end = self.steps = 0

    def start_block(self, start: int, end: int) -> None:
        """Move to the block ``[start, end)``; the next call refreshes the cache."""
        self.start, self.end, self.steps, self.cache = start, end, 0, None

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Drop every batch row not in ``rows`` (finished rows leave the forward batch)."""
        self.attention_mask = _rows(self.attention_mask, rows)
        self.ordered_mask = _rows(self.ordered_mask, rows)
        if self.cache is not None:
            self.cache.batch_select_indices(rows)

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
                logits = self._forward(tokens[rows], padding, padding, columns, None, wanted)
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
        # Rows that wait for the others to finish the block stay out: a copy of the working rows' cache runs.
        subset = DynamicCache(ddp_cache_data=[(keys[rows], values[rows]) for keys, values, _ in self.cache])
        return self._forward(tokens[rows], _rows(self.ordered_mask, rows), _rows(self.attention_mask, rows), window,
                             subset, keep)

    def _forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None, padding: torch.Tensor | None,
                 columns: torch.Tensor, cache: DynamicCache | None, keep: torch.Tensor) -> torch.Tensor:
        """Run the columns ``columns`` of ``tokens`` (in that order) and return the outputs at ``keep``.

        ``attention_mask`` is in the order the keys are stored (cache, then ``columns``); ``padding`` in
        column order, for the position ids."""
        positions = position_ids(padding, tokens.shape, tokens.device)[:, columns]
        return self.model(input_ids=tokens[:, columns], attention_mask=attention_mask, position_ids=positions,
                          cache=cache, use_cache=cache is not None, logits_to_keep=keep).logits
