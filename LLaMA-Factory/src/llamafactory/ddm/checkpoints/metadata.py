"""What a diffusion checkpoint's ``config.json`` records beyond its AR model, and the window it can read.

* The sampling length: the released checkpoints keep it where transformers keeps task defaults,
  ``task_specific_params["text-generation"]["max_length"]`` (512 DiffuGPT-S, 1024 DiffuGPT-M, 2048 DiffuLLaMA).
* The mask token id (``mask_token_id``), written by the 7B trainer (DiffuLLaMA-training) so that a model saved
  without tokenizer files still names its mask token; the released checkpoints do not have it.
* The block size of block diffusion (``block_size``; absent or null = full-sequence diffusion), so every
  loader builds the model with its block-causal attention (docs/design.md#block-diffusion).
  A LoRA adapter has no ``config.json`` of its own: its block size is kept beside it, in
  ``diffusion_config.json``, and applying the adapter records it on the model's config.
* ``check_window``: a sequence longer than the position table fails before any work, not at step N.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import PretrainedConfig

from ...errors import UserInputError
from ...utils.files import atomic_write_text
from ..attention import check_block_size

MASK_ID_KEY = "mask_token_id"
BLOCK_SIZE_KEY = "block_size"
ADAPTER_METADATA = "diffusion_config.json"


def generation_length(config: PretrainedConfig, default: int = 512) -> int:
    """The checkpoint's sampling length, capped by its position table."""
    params = getattr(config, "task_specific_params", None) or {}
    length = int(params.get("text-generation", {}).get("max_length", default))
    limit = position_limit(config)
    return min(length, limit) if limit else length


def position_limit(config: PretrainedConfig) -> int | None:
    """The longest sequence the model's position table covers, when the config says."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if value:
            return int(value)
    return None


def record_generation_length(config: PretrainedConfig, length: int) -> None:
    """Store the sampling length where ``generation_length`` (and the original loaders) read it."""
    params = dict(getattr(config, "task_specific_params", None) or {})
    params["text-generation"] = {**params.get("text-generation", {}), "do_sample": True, "max_length": int(length)}
    config.task_specific_params = params


def check_window(config: PretrainedConfig, length: int, what: str) -> None:
    """Refuse a sequence of ``length`` tokens that the model's position table does not cover."""
    limit = position_limit(config)
    if limit is not None and length > limit:
        raise UserInputError(
            f"{what} needs {length} positions, more than the {limit} the model covers "
            f"({config.model_type} max_position_embeddings / n_positions)"
        )


def record_mask_id(config: PretrainedConfig, mask_id: int) -> None:
    """Store the mask token id the model was trained with in its config."""
    setattr(config, MASK_ID_KEY, int(mask_id))


def recorded_mask_id(config: PretrainedConfig) -> int | None:
    """The mask token id a checkpoint's config records, if any."""
    value = getattr(config, MASK_ID_KEY, None)
    return None if value is None else int(value)


def record_block_size(config: PretrainedConfig, block_size: int | None) -> None:
    """Store the block size the model was trained with (None: full-sequence diffusion)."""
    setattr(config, BLOCK_SIZE_KEY, check_block_size(block_size))


def recorded_block_size(config: PretrainedConfig) -> int | None:
    """The block size a checkpoint's config records, or None (full-sequence diffusion)."""
    return check_block_size(getattr(config, BLOCK_SIZE_KEY, None))


def record_adapter_block_size(directory: str | os.PathLike, block_size: int | None) -> None:
    """Keep the block size of an adapter trained with one in its folder (an adapter has no config.json)."""
    if block_size is not None:
        text = json.dumps({BLOCK_SIZE_KEY: check_block_size(block_size)}, indent=2) + "\n"
        atomic_write_text(Path(directory) / ADAPTER_METADATA, text)


def recorded_adapter_block_size(directory: str | os.PathLike) -> int | None:
    """The block size an adapter folder records, or None (trained without one)."""
    path = Path(directory) / ADAPTER_METADATA
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get(BLOCK_SIZE_KEY)
    except (ValueError, AttributeError):
        raise UserInputError(f"{path} is not a JSON object with a {BLOCK_SIZE_KEY!r} key") from None
    return check_block_size(value)
