"""The diffusion core: one implementation of the math every entry point uses.

Plain functions and one ``nn.Module`` over torch and transformers; nothing here knows about CLIs,
Trainers or YAML.
"""

from .autoregressive import generate_continuations
from .checkpoints import (
    apply_adapters,
    check_window,
    checkpoint_special_tokens,
    detect_layout,
    generation_length,
    is_adapter_dir,
    load_adapter,
    load_causal_lm,
    load_diffusion_lm,
    load_tokenizer,
    load_weights_into,
    position_limit,
    record_adapter_block_size,
    record_generation_length,
    record_mask_id,
    recorded_mask_id,
    save_diffusion_checkpoint,
    tokenizer_problem,
)
from .framing import FramingTokens, framing_tokens
from .generate import GenerateOutput, generate
from .model import (
    DiffusionLM,
    align_to_outputs,
    align_to_tokens,
    first_predicted_token,
    is_bidirectional,
    make_bidirectional,
    predicting_output,
)
from .noise import (
    DiffusionLoss,
    anneal_ratio,
    annealed_attention_mask,
    annealed_steps,
    corrupt,
    diffusion_loss,
    maskable_positions,
    masked_cross_entropy,
    noise_seed,
    sample_noise_level,
    training_loss,
)
from .sampling import SamplingOutput, sample
from .scoring import ESTIMATORS, level_masks, nll_per_token, nll_totals, score_continuations, sequence_nll
from .settings import SETTINGS, SamplingConfig, Setting
from .strategies import STRATEGIES, Step, resolve_rule
from .tokens import (
    DEFAULT_MASK_TOKEN,
    KNOWN_MODELS,
    SpecialTokens,
    add_known_tokens,
    add_mask_token,
    resolve_special_tokens,
    start_token_id,
    with_start_token,
)

__all__ = [
    "add_known_tokens", "add_mask_token", "align_to_outputs", "align_to_tokens", "anneal_ratio",
    "annealed_attention_mask", "annealed_steps", "apply_adapters", "check_window", "checkpoint_special_tokens", "corrupt", "DEFAULT_MASK_TOKEN",
    "detect_layout", "diffusion_loss", "DiffusionLM", "DiffusionLoss", "ESTIMATORS", "first_predicted_token",
    "FramingTokens", "framing_tokens", "generate", "generate_continuations", "GenerateOutput", "generation_length",
    "is_adapter_dir", "is_bidirectional", "record_adapter_block_size", "KNOWN_MODELS",
    "level_masks", "load_adapter", "load_causal_lm", "load_diffusion_lm", "load_tokenizer", "load_weights_into",
    "make_bidirectional", "maskable_positions", "masked_cross_entropy", "nll_per_token", "nll_totals",
    "noise_seed", "position_limit", "predicting_output", "record_generation_length", "record_mask_id",
    "recorded_mask_id", "resolve_rule", "resolve_special_tokens", "sample", "sample_noise_level",
    "SamplingConfig", "SamplingOutput", "Setting", "SETTINGS", "save_diffusion_checkpoint", "score_continuations", "sequence_nll",
    "SpecialTokens", "start_token_id", "Step", "STRATEGIES", "tokenizer_problem", "training_loss", "with_start_token",
]
