"""Configs of the Hugging Face-native diffusion LMs (docs/design.md#hf-native-format): the AR model's own
config plus what diffusion needs, so that the released weights keep their transformers names."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import GPT2Config, LlamaConfig


@dataclass(kw_only=True)
class DiffusionFields:
    """The keys a diffusion checkpoint's config.json adds to its AR model's: the special token ids the sampler
    needs (``mask_token_id`` is required to sample), the shift convention (docs/design.md#shift), full
    attention (``is_causal = False``, which transformers' attention kernels honour) and the block size of
    block diffusion (None: full-sequence; docs/design.md#block-diffusion)."""

    records_special_tokens = True  # resolve_special_tokens reads pad / sep ids from configs that say so

    mask_token_id: int | None = None
    sep_token_id: int | None = None
    shift: bool = True
    is_causal: bool = False
    block_size: int | None = None


class DiffuGPTConfig(DiffusionFields, GPT2Config):
    """A DiffuGPT model: GPT-2 made bidirectional."""

    model_type = "diffugpt"


class DiffuLLaMAConfig(DiffusionFields, LlamaConfig):
    """A DiffuLLaMA model: LLaMA made bidirectional."""

    model_type = "diffullama"
