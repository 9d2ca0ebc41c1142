"""PEFT LoRA adapters on top of a diffusion checkpoint (docs/design.md#checkpoint-layouts)."""

from __future__ import annotations

from transformers import PreTrainedModel

from ...errors import UserInputError
from ...utils.hub import resolve_checkpoint_dir


def apply_adapters(model: PreTrainedModel, adapters: list[str], *, merge: bool = True) -> PreTrainedModel:
    """Apply PEFT LoRA adapters in order (merged into the weights by default, for inference)."""
    from peft import PeftModel

    for adapter in adapters:
        directory = resolve_checkpoint_dir(adapter)
        if not (directory / "adapter_config.json").exists():
            raise UserInputError(f"{directory} is not a PEFT adapter (no adapter_config.json)")
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        model = PeftModel.from_pretrained(model, directory)
        if merge:
            model = model.merge_and_unload()
            if tied:  # a trained embedding copy replaced the input embedding: the head follows it
                model.config.tie_word_embeddings = True
                model.get_output_embeddings().weight = model.get_input_embeddings().weight
    return model
