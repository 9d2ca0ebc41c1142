"""Which model to load and how: base weights, diffusion checkpoint, adapters, attention kernel."""

from __future__ import annotations

from dataclasses import dataclass, field

ATTENTION_CHOICES = ("auto", "eager", "sdpa", "flash_attention_2")
# LLaMA-Factory 0.8 spellings of the same choices.
ATTENTION_ALIASES = {"disabled": "eager", "fa2": "flash_attention_2"}


def split_names(value: str | None) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]``; None or empty -> ``[]``."""
    if not value:
        return []
    return [item.strip() for item in str(value).split(",") if item.strip()]


@dataclass
class ModelArguments:
    """Model keys of a training config."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Local directory or Hub id of the base (AR or diffusion) model."}
    )
    checkpoint_dir: str | None = field(
        default=None,
        metadata={"help": "A ddm checkpoint (either released layout) loaded over the base architecture."},
    )
    adapter_name_or_path: str | None = field(
        default=None, metadata={"help": "Comma-separated PEFT LoRA adapters, applied in order."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Cache folder for datasets (models use HF_HOME)."})
    model_revision: str | None = field(default=None, metadata={"help": "Hub revision of model_name_or_path."})
    flash_attn: str = field(
        default="auto",
        metadata={"help": "Attention kernel: auto (sdpa), eager, sdpa or flash_attention_2."},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model/tokenizer code from the checkpoint (off by default)."}
    )
    print_param_status: bool = field(
        default=False, metadata={"help": "Log every parameter's name, dtype and trainable flag."}
    )

    def __post_init__(self) -> None:
        self.flash_attn = ATTENTION_ALIASES.get(self.flash_attn, self.flash_attn)

    @property
    def adapters(self) -> list[str]:
        return split_names(self.adapter_name_or_path)

    @property
    def attn_implementation(self) -> str:
        """The transformers ``attn_implementation`` value for ``flash_attn``."""
        return "sdpa" if self.flash_attn == "auto" else self.flash_attn
