"""Diffusion checkpoints: the released layouts, loading (with adapters), saving, and config metadata."""

from .adapters import apply_adapters, is_adapter_dir, load_adapter
from .layouts import (
    BODY_PREFIX,
    EMBED_PREFIX,
    Layout,
    checkpoint_keys,
    detect_layout,
    hf_to_wrapper_keys,
    read_state_dict,
    weight_files,
    wrapper_to_hf_keys,
)
from .loading import (
    checkpoint_special_tokens,
    load_causal_lm,
    load_diffusion_lm,
    load_tokenizer,
    load_weights_into,
    tokenizer_problem,
)
from .metadata import (
    check_window,
    generation_length,
    position_limit,
    record_adapter_block_size,
    record_block_size,
    record_generation_length,
    record_mask_id,
    recorded_adapter_block_size,
    recorded_block_size,
    recorded_mask_id,
)
from .saving import save_diffusion_checkpoint

__all__ = [
    "apply_adapters", "BODY_PREFIX", "check_window", "checkpoint_special_tokens", "checkpoint_keys", "detect_layout", "EMBED_PREFIX",
    "generation_length", "hf_to_wrapper_keys", "is_adapter_dir", "Layout", "load_adapter", "load_causal_lm",
    "load_diffusion_lm", "load_tokenizer", "load_weights_into", "position_limit", "read_state_dict",
    "record_adapter_block_size", "record_block_size", "record_generation_length", "record_mask_id", "recorded_adapter_block_size", "recorded_block_size", "recorded_mask_id",
    "save_diffusion_checkpoint",
    "tokenizer_problem", "weight_files", "wrapper_to_hf_keys",
]
