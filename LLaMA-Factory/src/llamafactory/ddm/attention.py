"""Attention masks of block diffusion (docs/design.md#block-diffusion) as 4D float additive tensors.

Block ``k`` of a row holds the tokens whose position ids (counted over real tokens only, so padding never
moves a boundary) lie in ``[k * block_size, (k + 1) * block_size)``. Attention is *block-causal*: a query
sees every real key of its own block (bidirectional inside) and of earlier blocks, never a later one, so
the keys and values of finished blocks never change. Training runs ``[x_t ; x_0]`` (noisy copy, then
clean copy, sharing position ids) in one forward: a noisy block sees itself and the clean blocks before
it, a clean block sees the clean blocks up to itself.

The tensors are ``[batch or 1, 1, queries, keys]`` in the model's dtype: 0 where allowed, the dtype's
minimum where blocked. Every query may see itself, so a padding row never has all keys blocked.
"""

from __future__ import annotations

import torch

from ..errors import UserInputError

# Kernels that take an arbitrary 4D float mask. flex_attention would add it as a score modification, which
# crashes on CPU with torch 2.13 (a BlockMask for it is not built here); flash_attention_2 takes no 4D mask.
MASK_KERNELS = ("eager", "sdpa")


def check_block_size(block_size: object) -> int | None:
    """``block_size`` as an int >= 1, or None (full-sequence diffusion); anything else is one clear error."""
    if block_size is None:
        return None
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise UserInputError(f"block_size must be an integer >= 1 (or null for full-sequence diffusion), "
                             f"got {block_size!r}")
    return block_size


def check_block_kernel(attn_implementation: str | None, model_type: str) -> None:
    """Refuse an attention kernel that cannot take the block-causal mask, before any work."""
    kernel = attn_implementation or "eager"
    if kernel not in MASK_KERNELS:
        raise UserInputError(f"block diffusion needs an attention kernel that takes a 4D mask; attn_implementation "
                             f"{kernel!r} cannot for {model_type}: use {' or '.join(MASK_KERNELS)}")


def position_ids(attention_mask: torch.Tensor | None, shape: torch.Size, device: torch.device) -> torch.Tensor:
    """Position of every column counted over real tokens only, so left padding does not move a row."""
    if attention_mask is None or attention_mask.dim() != 2:
        return torch.arange(shape[1], device=device).expand(shape[0], -1)
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[batch, queries, keys]`` booleans -> ``[batch, 1, queries, keys]`` additive mask."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def _block_pairs(positions: torch.Tensor, block_size: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(same, earlier)``, ``[batch, L - start, L]``: key in the query's block / in a block before it, for the
    queries ``[start, L)``."""
    blocks = positions // block_size
    query, key = blocks[:, start:, None], blocks[:, None, :]
    return query == key, key < query


def _finish(allowed: torch.Tensor, real: torch.Tensor | None, dtype: torch.dtype, start: int = 0) -> torch.Tensor:
    """Hide padding keys, let every query (column ``start + i`` for row ``i``) see itself, and make the
    additive mask."""
    if real is not None:
        allowed = allowed & real.bool()[:, None, :]
    columns = torch.arange(allowed.shape[-1], device=allowed.device)
    allowed = allowed | (columns[None, :] == columns[start : start + allowed.shape[-2], None])
    return _additive(allowed, dtype)


def block_causal_mask(
    positions: torch.Tensor,
    block_size: int,
    *,
    attention_mask: torch.Tensor | None = None,
    opened: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    start: int = 0,
) -> torch.Tensor:
    """Block-causal mask ``[batch, 1, L, L]`` for a sequence with position ids ``positions`` ``[batch, L]``.

    ``attention_mask`` (2D, 1 = real) hides padding keys; ``opened`` (``[L, L]`` bool over column pairs,
    e.g. the annealing draw) restricts the pairs inside a block to those it allows (None: all). With
    ``start``, only the query rows ``[start, L)`` (``[batch, 1, L - start, L]``): a window of columns run
    against a key/value cache of the columns before it.
    """
    same, earlier = _block_pairs(positions, block_size, start)
    inside = same if opened is None else same & opened[start:]
    return _finish(earlier | inside, attention_mask, dtype, start)


def noisy_clean_mask(
    positions: torch.Tensor,
    block_size: int,
    *,
    attention_mask: torch.Tensor | None = None,
    opened: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The ``[x_t ; x_0]`` training mask ``[batch, 1, 2L, 2L]`` (both halves with position ids ``positions``).

    Noisy block ``k`` sees itself and clean blocks ``< k``; clean block ``k`` sees clean blocks ``<= k``; no
    query sees a noisy key of another block. ``attention_mask`` and ``opened`` as in ``block_causal_mask``,
    ``opened`` applying inside the block for both halves.
    """
    same, earlier = _block_pairs(positions, block_size)
    inside = same if opened is None else same & opened
    never = torch.zeros_like(same)
    allowed = torch.cat([torch.cat([inside, earlier], dim=2), torch.cat([never, earlier | inside], dim=2)], dim=1)
    real = None if attention_mask is None else attention_mask.repeat(1, 2)
    return _finish(allowed, real, dtype)


def block_attention_inputs(
    shape: torch.Size,
    block_size: int,
    *,
    attention_mask: torch.Tensor | None,
    positions: torch.Tensor | None,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(attention_mask, position_ids)`` for a block-causal forward of ``shape = [batch, L]`` columns.

    A 4D mask is the caller's own and passes through untouched; otherwise the block-causal mask is built from
    the padding mask (2D or None) and ``positions`` (given position ids, else counted over real tokens).
    """
    if attention_mask is not None and attention_mask.dim() == 4:
        return attention_mask, positions
    given = positions is not None
    if not given:
        positions = position_ids(attention_mask, shape, device)
    shared = positions if given or attention_mask is not None else positions[:1]  # one mask for the batch
    mask = block_causal_mask(shared, block_size, attention_mask=attention_mask, dtype=dtype)
    return mask, positions
