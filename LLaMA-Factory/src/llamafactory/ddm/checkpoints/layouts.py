"""The two released weight layouts and the renaming between them (docs/design.md#checkpoint-layouts).

* wrapper layout (DiffuGPT on the Hub): ``embed_tokens.*`` (the tied input/output embedding) and
  ``denoise_model.*`` (the transformer body without it); no ``lm_head.weight``.
* hf layout (DiffuLLaMA on the Hub, and what the stages write by default): an ordinary transformers
  causal-LM checkpoint, possibly sharded with ``model.safetensors.index.json``.

Weights are read with safetensors; ``.bin`` files only through ``weights_only=True`` loading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from safetensors import safe_open
from transformers import PreTrainedModel

from ...errors import UserInputError

Layout = Literal["wrapper", "hf"]
EMBED_PREFIX = "embed_tokens."
BODY_PREFIX = "denoise_model."


def weight_files(directory: Path) -> list[Path]:
    """The checkpoint's weight files: safetensors (single or sharded) first, else ``.bin``."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = directory / index_name
        if index.exists():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [directory / shard for shard in shards]
    for pattern in ("*.safetensors", "pytorch_model*.bin"):
        found = sorted(p for p in directory.glob(pattern) if "adapter" not in p.name)
        if found:
            return found
    raise UserInputError(f"{directory} holds no model weights (*.safetensors or pytorch_model*.bin)")


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory, loaded safely onto the CPU."""
    state: dict[str, torch.Tensor] = {}
    for file in weight_files(directory):
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as handle:
                state.update({key: handle.get_tensor(key) for key in handle.keys()})
        else:
            state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state


def checkpoint_keys(directory: Path) -> list[str]:
    """Tensor names of a checkpoint without loading the tensors (safetensors), else by loading."""
    keys: list[str] = []
    for file in weight_files(directory):
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as handle:
                keys.extend(handle.keys())
        else:
            keys.extend(torch.load(file, map_location="cpu", weights_only=True).keys())
    return keys


def is_wrapper_key(key: str) -> bool:
    return key.startswith((EMBED_PREFIX, BODY_PREFIX))


def detect_layout(directory: Path) -> Layout:
    return "wrapper" if any(is_wrapper_key(k) for k in checkpoint_keys(directory)) else "hf"


def embedding_path(model: PreTrainedModel) -> str:
    """Dotted name of the input embedding inside the base model (``wte`` for GPT-2)."""
    embedding = model.get_input_embeddings()
    for name, module in model.base_model.named_modules():
        if module is embedding:
            return name
    raise UserInputError(f"cannot locate the input embedding of {type(model).__name__}")


def wrapper_to_hf_keys(state: dict[str, torch.Tensor], model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """Rename wrapper-layout keys (``embed_tokens`` / ``denoise_model``) to the model's own names."""
    prefix, embed = model.base_model_prefix, embedding_path(model)
    renamed = {}
    for key, value in state.items():
        if key.startswith(EMBED_PREFIX):
            renamed[f"{prefix}.{embed}.{key[len(EMBED_PREFIX):]}"] = value
        elif key.startswith(BODY_PREFIX):
            renamed[f"{prefix}.{key[len(BODY_PREFIX):]}"] = value
        else:
            renamed[key] = value
    return renamed


def hf_to_wrapper_keys(
    model: PreTrainedModel, state_dict: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The wrapper-layout state of a tied model: ``embed_tokens.*`` + ``denoise_model.*``, no head."""
    prefix, embed = model.base_model_prefix, embedding_path(model)
    state = {}
    for key, value in (model.state_dict() if state_dict is None else state_dict).items():
        if not key.startswith(prefix + "."):
            continue
        inner = key[len(prefix) + 1 :]
        if inner.startswith(embed + "."):
            state[EMBED_PREFIX + inner[len(embed) + 1 :]] = value
        else:
            state[BODY_PREFIX + inner] = value
    return state
