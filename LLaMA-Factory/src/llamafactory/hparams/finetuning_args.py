"""What to train (stage), which parameters (full / freeze / LoRA) and the diffusion settings (docs/design.md#shift)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .model_args import split_names

STAGES = ("pt", "sft", "ddm", "ddm-sft")
DIFFUSION_STAGES = ("ddm", "ddm-sft")
FINETUNING_TYPES = ("full", "freeze", "lora")
# docs/design.md#attention-mask-annealing: ddm adapts a causal model slowly; ddm-sft starts from an already bidirectional one.
DEFAULT_ANNEAL_STEPS = {"ddm": 10000, "ddm-sft": 1}


@dataclass
class FinetuningArguments:
    """Stage, trainable parameters and diffusion keys of a training config."""

    stage: str = field(default="sft", metadata={"help": "pt, sft (autoregressive) or ddm, ddm-sft (diffusion)."})
    finetuning_type: str = field(default="lora", metadata={"help": "full, freeze or lora."})
    freeze_trainable_layers: int = field(
        default=2, metadata={"help": "freeze: train the last N layers (negative: the first N)."}
    )
    freeze_trainable_modules: str = field(
        default="all", metadata={"help": "freeze: comma-separated module names inside those layers, or all."}
    )
    freeze_extra_modules: str | None = field(
        default=None, metadata={"help": "freeze: comma-separated modules outside the layers to train too."}
    )
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA scale (default: 2 x lora_rank)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target: str = field(
        default="all", metadata={"help": "Comma-separated module names for LoRA, or all (every linear layer)."}
    )
    additional_target: str | None = field(
        default=None,
        metadata={"help": "Comma-separated modules trained in full and saved with the adapter (e.g. embed_tokens)."},
    )
    plot_loss: bool = field(default=False, metadata={"help": "Write training_loss.png (and eval) after training."})
    shift: bool = field(
        default=False,
        metadata={"help": "Output i predicts token i+1, as in the AR model. Default false as in the original; "
                          "every released model and shipped diffusion config uses true."},
    )
    anneal_steps: int | None = field(
        default=None,
        metadata={"help": "Optimiser steps over which attention opens up; 0 or 1: none (default: 10000 ddm, 1 ddm-sft)."},
    )
    block_size: int | None = field(
        default=None,
        metadata={"help": "Block diffusion: blocks of this many tokens, left to right, diffusion inside each, "
                          "block-causal attention (docs/design.md#block-diffusion). Unset: full-sequence diffusion."},
    )
    allow_block_size_change: bool = field(
        default=False,
        metadata={"help": "Let a model whose config records a block_size be trained or evaluated with another "
                          "block_size (or none), or a full-sequence model be evaluated with one."},
    )
    diffusion_steps: int = field(
        default=64, metadata={"help": "Noise levels for the evaluation ELBO and reverse steps for prediction."}
    )
    score_temp: float = field(
        default=0.5,
        metadata={"help": "Accepted for the original configs and unused: the original declared it but no code read it."},
    )

    @property
    def is_diffusion(self) -> bool:
        return self.stage in DIFFUSION_STAGES

    @property
    def lora_targets(self) -> list[str]:
        return split_names(self.lora_target)

    @property
    def additional_targets(self) -> list[str]:
        return split_names(self.additional_target)

    @property
    def freeze_modules(self) -> list[str]:
        return split_names(self.freeze_trainable_modules)

    @property
    def freeze_extras(self) -> list[str]:
        return split_names(self.freeze_extra_modules)
