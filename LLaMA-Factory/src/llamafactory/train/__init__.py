"""Training stages on HF Trainer: pt, sft (autoregressive) and ddm, ddm-sft (diffusion)."""

from .tuner import run_exp

__all__ = ["run_exp"]
