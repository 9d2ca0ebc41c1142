"""Hugging Face-native DiffuGPT / DiffuLLaMA (docs/design.md#hf-native-format).

The transformers GPT-2 / LLaMA LMs with their weight names, run with full attention. ``model(input_ids,
attention_mask)`` returns logits (under ``config.shift`` output ``i`` predicts token ``i + 1``);
with ``config.block_size`` the forward makes attention block-causal itself (docs/design.md#block-diffusion);
``diffusion_generate`` and ``generate`` run the core generator (``ddm.generate``) with the defaults of
``generation_config``, never transformers' left-to-right decoding.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationConfig, GPT2LMHeadModel, LlamaForCausalLM

from ...errors import UserInputError
from ..attention import block_attention_inputs
from ..generate import GenerateOutput, generate
from ..model import DiffusionLM
from ..tokens import SpecialTokens
from .configuration_diffusion import DiffuGPTConfig, DiffuLLaMAConfig
from .generation_diffusion import DiffusionGenerationConfig


class DiffusionGenerationMixin:
    """Sampling for a transformers LM whose config carries ``DiffusionFields``."""

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values: Any = None, **kwargs: Any) -> Any:
        """The AR model's forward; under ``config.block_size`` a 2D or absent ``attention_mask`` becomes the
        block-causal mask when no key/value cache holds tokens yet (with a filled cache the caller's mask is
        used: the current block sees every cached block)."""
        block_size = self.config.block_size
        cached = past_key_values is not None and past_key_values.get_seq_length() > 0
        if block_size is not None and not cached:
            embeds = kwargs.get("inputs_embeds")
            source = input_ids if input_ids is not None else embeds
            attention_mask, position_ids = block_attention_inputs(
                source.shape[:2], block_size, attention_mask=attention_mask, positions=position_ids,
                dtype=self.dtype, device=source.device)
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               past_key_values=past_key_values, **kwargs)

    @property
    def generation_config(self) -> DiffusionGenerationConfig | None:
        return self.__dict__.get("_diffusion_generation_config")

    @generation_config.setter
    def generation_config(self, value: GenerationConfig | None) -> None:
        """transformers sets its own class when loading; the sampler's settings are kept as this class."""
        self.__dict__["_diffusion_generation_config"] = None if value is None else DiffusionGenerationConfig.adopt(value)

    def special_tokens(self) -> SpecialTokens:
        """The token ids the sampler needs, as config.json records them."""
        config = self.config
        if config.mask_token_id is None:
            raise UserInputError(f"{config.model_type} config records no mask_token_id; set it to the mask token's id")
        eos = config.eos_token_id[0] if isinstance(config.eos_token_id, list) else config.eos_token_id
        return SpecialTokens(mask_id=config.mask_token_id, pad_id=config.pad_token_id, sep_id=config.sep_token_id,
                             bos_id=config.bos_token_id, eos_id=eos)

    def diffusion_lm(self) -> DiffusionLM:
        """This model as the core's denoiser (the same module, not a copy)."""
        return DiffusionLM(self, self.special_tokens(), shift=self.config.shift,
                           block_size=self.config.block_size)

    @torch.no_grad()
    def diffusion_generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        generation_config: DiffusionGenerationConfig | None = None,
        **kwargs: Any,
    ) -> torch.Tensor | GenerateOutput:
        """Prompt + ``max_new_tokens`` generated tokens per row of a left-padded batch.

        ``kwargs`` are ``ddm.generate``'s arguments (``steps``, ``block_length``, ``strategy``, ``cache``,
        ``generator``, ``return_dict``... and the aliases ``gen_length``, ``block_size``, ``alg``,
        ``remasking``) and replace the settings of ``generation_config`` (by default the model's).
        """
        settings = (generation_config or self.generation_config or DiffusionGenerationConfig()).sampler_arguments(kwargs)
        return generate(self.diffusion_lm(), input_ids, attention_mask, **settings)

    def generate(self, inputs: torch.Tensor | None = None, generation_config: DiffusionGenerationConfig | None = None,
                 **kwargs: Any) -> torch.Tensor | GenerateOutput:
        """``diffusion_generate`` under transformers' name (``inputs`` or ``input_ids``)."""
        input_ids = kwargs.pop("input_ids", inputs)
        if input_ids is None:
            raise UserInputError("generate needs input_ids: a left-padded batch of prompts")
        return self.diffusion_generate(input_ids, generation_config=generation_config, **kwargs)


class DiffuGPTForMaskedLM(DiffusionGenerationMixin, GPT2LMHeadModel):
    """DiffuGPT: GPT-2's LM with full attention; weights named as ``GPT2LMHeadModel``'s."""

    config_class = DiffuGPTConfig


class DiffuLLaMAForMaskedLM(DiffusionGenerationMixin, LlamaForCausalLM):
    """DiffuLLaMA: LLaMA's LM with full attention; weights named as ``LlamaForCausalLM``'s."""

    config_class = DiffuLLaMAConfig
