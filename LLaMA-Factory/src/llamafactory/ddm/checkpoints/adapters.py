"""PEFT LoRA adapters on top of a diffusion checkpoint (docs/design.md#checkpoint-layouts).

An adapter trained with PEFT around the original wrapper module names its tensors after that wrapper
(``base_model.model.denoise_model.layers.0.…``, ``base_model.model.embed_tokens.weight``); those names are
renamed to the model's own (``model.layers.0.…`` / ``transformer.h.0.…``) while PEFT loads them. An
adapter whose tensors name modules the model does not have, in either layout, is an error.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import PreTrainedModel

from ...errors import UserInputError
from ...utils.hub import resolve_checkpoint_dir
from .layouts import BODY_PREFIX, EMBED_PREFIX, embedding_path
from .metadata import record_block_size, recorded_adapter_block_size

PEFT_PREFIX = "base_model.model."
_LORA_PART = re.compile(r"\.lora_[A-Za-z_]+(\.[A-Za-z_]+)?$")


def is_adapter_dir(directory: Path) -> bool:
    return (directory / "adapter_config.json").is_file()


def adapter_keys(directory: Path) -> list[str]:
    """Tensor names of an adapter's weights (safetensors, else ``adapter_model.bin`` loaded with weights only)."""
    if (directory / "adapter_model.safetensors").is_file():
        with safe_open(str(directory / "adapter_model.safetensors"), framework="pt") as handle:
            return list(handle.keys())
    if (directory / "adapter_model.bin").is_file():
        return list(torch.load(directory / "adapter_model.bin", map_location="cpu", weights_only=True))
    raise UserInputError(f"{directory} has adapter_config.json but no adapter_model.safetensors or adapter_model.bin")


def wrapper_key_mapping(model: PreTrainedModel) -> dict[str, str]:
    """PEFT ``key_mapping`` (regex -> replacement, applied after ``base_model.model.``) from the original
    wrapper's module names to ``model``'s."""
    prefix = model.base_model_prefix
    return {f"^{re.escape(EMBED_PREFIX)}": f"{prefix}.{embedding_path(model)}.", f"^{re.escape(BODY_PREFIX)}": f"{prefix}."}


def _module_of(key: str) -> str:
    """The module a PEFT tensor belongs to: before ``.lora_A.weight`` etc., else before ``.weight`` / ``.bias``."""
    stripped = _LORA_PART.sub("", key)
    return stripped if stripped != key else key.rsplit(".", 1)[0]


def _renamed(key: str, mapping: dict[str, str]) -> str:
    inner = key[len(PEFT_PREFIX) :]
    for pattern, replacement in mapping.items():
        inner, count = re.subn(pattern, replacement, inner)
        if count:
            break
    return inner


def adapter_key_mapping(model: PreTrainedModel, keys: list[str], directory: Path) -> dict[str, str] | None:
    """The renaming a LoRA adapter's keys need for ``model`` (None: already its names).

    Raises UserInputError naming the first keys that fit neither the model's layout nor the wrapper's.
    """
    wrapper = any(key.startswith(PEFT_PREFIX + prefix) for key in keys for prefix in (EMBED_PREFIX, BODY_PREFIX))
    mapping = wrapper_key_mapping(model) if wrapper else {}
    modules = {name for name, _ in model.named_modules()}
    unmatched = [key for key in keys
                 if not key.startswith(PEFT_PREFIX) or _module_of(_renamed(key, mapping)) not in modules]
    if unmatched:
        raise UserInputError(
            f"adapter {directory} does not fit this {type(model).__name__}: its keys match neither the model's "
            f"layout nor the original wrapper's (denoise_model / embed_tokens); first unmatched: "
            f"{', '.join(unmatched[:3])}"
        )
    return mapping or None


def _renamed_config(config, model: PreTrainedModel):
    """Module names of the wrapper in an adapter config, as the model calls them (GPT-2: embed_tokens -> wte)."""
    embedding = embedding_path(model).split(".")[-1]
    if config.modules_to_save:
        config.modules_to_save = [embedding if name == EMBED_PREFIX.rstrip(".") else name
                                  for name in config.modules_to_save]
    if isinstance(config.target_modules, str):
        config.target_modules = config.target_modules.replace(BODY_PREFIX.rstrip("."), model.base_model_prefix)
    return config


def load_adapter(model: PreTrainedModel, adapter: str | Path, *, is_trainable: bool = False):
    """``model`` wrapped with one PEFT adapter (either layout), trainable or for inference; an adapter trained
    with a block size records it on ``model.config``."""
    from peft import PeftConfig, PeftModel

    directory = resolve_checkpoint_dir(adapter)
    if not is_adapter_dir(directory):
        raise UserInputError(f"{directory} is not a PEFT adapter (no adapter_config.json)")
    config = PeftConfig.from_pretrained(str(directory))
    block_size = recorded_adapter_block_size(directory)
    if block_size is not None:
        record_block_size(model.config, block_size)
    mapping = None
    if config.peft_type == "LORA":
        mapping = adapter_key_mapping(model, adapter_keys(directory), directory)
        if mapping:
            config = _renamed_config(config, model)
    return PeftModel.from_pretrained(model, directory, config=config, key_mapping=mapping, is_trainable=is_trainable)


def apply_adapters(model: PreTrainedModel, adapters: list[str | Path], *, merge: bool = True) -> PreTrainedModel:
    """Apply PEFT LoRA adapters in order (merged into the weights by default, for inference)."""
    for adapter in adapters:
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        model = load_adapter(model, adapter)
        if merge:
            model = model.merge_and_unload()
            if tied:  # a trained embedding copy replaced the input embedding: the head follows it
                model.config.tie_word_embeddings = True
                model.get_output_embeddings().weight = model.get_input_embeddings().weight
    return model
