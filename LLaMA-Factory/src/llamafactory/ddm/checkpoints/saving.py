"""Writing a diffusion checkpoint in either released layout, atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import PreTrainedModel

from ...errors import UserInputError
from ...utils.files import staged_directory
from ..model import make_bidirectional
from .layouts import Layout, hf_to_wrapper_keys
from .metadata import record_block_size, record_generation_length


def save_diffusion_checkpoint(
    model: PreTrainedModel,
    directory: str | os.PathLike,
    *,
    layout: Layout = "hf",
    tokenizer: Any = None,
    generation_length: int | None = None,
    max_shard_size: str = "5GB",
    state_dict: dict[str, torch.Tensor] | None = None,
    block_size: int | None = None,
) -> Path:
    """Write a checkpoint in a released layout, staged and then moved into place whole.

    The config records ``is_causal = False`` and, when given, the sampling length and the block size of
    block diffusion (docs/design.md#block-diffusion); the wrapper layout
    is for tied models (DiffuGPT) and stores no head. ``state_dict`` replaces the model's own weights
    (e.g. gathered from ZeRO-3 shards onto one process), keyed as ``model.state_dict()``.
    """
    config = model.config
    if layout == "wrapper" and not getattr(config, "tie_word_embeddings", False):
        raise UserInputError("the wrapper layout stores no head: it needs a tied model (GPT-2)")
    with staged_directory(directory) as staging:
        make_bidirectional(model)
        if generation_length is not None:
            record_generation_length(config, generation_length)
        if block_size is not None:
            record_block_size(config, block_size)
        if layout == "wrapper":
            state = {k: v.detach().cpu().contiguous() for k, v in hf_to_wrapper_keys(model, state_dict).items()}
            save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
            config.save_pretrained(staging)
        else:
            model.save_pretrained(staging, safe_serialization=True, max_shard_size=max_shard_size,
                                  state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
    return Path(directory)
