"""The diffusion core: one implementation of the math every entry point uses.

Plain functions and one ``nn.Module`` over torch and transformers; nothing here knows about CLIs,
Trainers or YAML.
"""

from .checkpoints import (
    apply_adapters,
    detect_layout,
    generation_length,
    load_causal_lm,
    load_diffusion_lm,
    load_tokenizer,
    load_weights_into,
    resolve_checkpoint_dir,
    save_diffusion_checkpoint,
)
from .errors import DiffusionInputError
from .model import DiffusionLM, align_to_tokens, is_bidirectional, make_bidirectional
from .noise import (
    DiffusionLoss,
    anneal_ratio,
    annealed_attention_mask,
    corrupt,
    diffusion_loss,
    masked_cross_entropy,
    maskable_positions,
    sample_noise_level,
    training_loss,
)
from .sampling import STRATEGIES, SamplingConfig, SamplingOutput, random_keep, sample, topk_confidence
from .scoring import level_masks, score_continuations, sequence_nll
from .tokens import (
    DEFAULT_MASK_TOKEN,
    KNOWN_MODELS,
    SpecialTokens,
    add_mask_token,
    resolve_special_tokens,
    start_token_id,
)

__all__ = [
    "DEFAULT_MASK_TOKEN", "KNOWN_MODELS", "STRATEGIES", "DiffusionInputError", "DiffusionLM", "DiffusionLoss",
    "SamplingConfig", "SamplingOutput", "SpecialTokens", "add_mask_token", "align_to_tokens", "anneal_ratio",
    "annealed_attention_mask", "apply_adapters", "corrupt", "detect_layout", "diffusion_loss",
    "generation_length", "is_bidirectional", "load_causal_lm", "load_diffusion_lm", "load_tokenizer",
    "load_weights_into", "make_bidirectional", "maskable_positions", "masked_cross_entropy", "level_masks",
    "random_keep", "resolve_checkpoint_dir", "resolve_special_tokens", "sample", "sample_noise_level",
    "save_diffusion_checkpoint", "score_continuations", "sequence_nll", "start_token_id", "topk_confidence", "training_loss",
]
