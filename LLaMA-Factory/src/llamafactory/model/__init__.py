"""Model side of a run: tokenizer and special tokens, base model + checkpoint_dir, finetuning type."""

from .adapter import log_parameters, setup_finetuning
from .loader import compute_dtype, load_base_model, load_model
from .tokenizer import diffusion_special_tokens, load_run_tokenizer

__all__ = [
    "compute_dtype", "diffusion_special_tokens", "load_base_model", "load_model",
    "load_run_tokenizer", "log_parameters", "setup_finetuning",
]
