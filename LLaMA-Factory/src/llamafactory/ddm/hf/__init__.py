"""Hugging Face-native diffusion LMs (docs/design.md#hf-native-format): configs, models and a generation config
registered with transformers' Auto classes, so ``AutoModel.from_pretrained(exported_folder)`` works."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

from .configuration_diffusion import DiffuGPTConfig, DiffuLLaMAConfig, DiffusionFields
from .generation_diffusion import DiffusionGenerationConfig
from .modeling_diffusion import DiffuGPTForMaskedLM, DiffuLLaMAForMaskedLM, DiffusionGenerationMixin

# The AR architecture each diffusion family is built on: its model_type -> (config class, model class).
FAMILIES = {"gpt2": (DiffuGPTConfig, DiffuGPTForMaskedLM), "llama": (DiffuLLaMAConfig, DiffuLLaMAForMaskedLM)}
# Auto classes that resolve an exported folder; AutoModelForCausalLM too, because the core loads every
# diffusion checkpoint as a (bidirectional) causal LM.
AUTO_CLASSES = (AutoModel, AutoModelForMaskedLM, AutoModelForCausalLM)


def register_auto_classes() -> None:
    """Make ``diffugpt`` / ``diffullama`` folders loadable through the Auto API (idempotent)."""
    for config_class, model_class in FAMILIES.values():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        for auto_class in AUTO_CLASSES:
            auto_class.register(config_class, model_class, exist_ok=True)


__all__ = [
    "AUTO_CLASSES", "DiffuGPTConfig", "DiffuGPTForMaskedLM", "DiffuLLaMAConfig", "DiffuLLaMAForMaskedLM",
    "DiffusionFields", "DiffusionGenerationConfig", "DiffusionGenerationMixin", "FAMILIES",
    "register_auto_classes",
]
