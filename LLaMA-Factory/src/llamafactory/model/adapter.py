"""Which parameters train: ``full``, ``freeze`` (some layers) or ``lora`` (peft), and adapter loading.

With LoRA, ``additional_target`` modules are trained in full and saved with the adapter. On a model whose
output head is tied to the input embedding (GPT-2), training a copy of the embedding would silently
untie the head; the head is then made a trained copy too and peft keeps the two tied.
"""

from __future__ import annotations

import logging
import re

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from ..ddm import apply_adapters, load_adapter
from ..errors import UserInputError
from ..hparams import FinetuningArguments, ModelArguments

logger = logging.getLogger(__name__)

_LAYER_INDEX = re.compile(r"\.(\d+)\.")


def _module_name(model: torch.nn.Module, target: torch.nn.Module | None) -> str | None:
    return next((name for name, module in model.named_modules() if module is target), None) if target else None


def _tied_head_targets(model: PreTrainedModel, targets: list[str]) -> list[str]:
    """``targets`` plus the output head when it is tied to an input embedding named in ``targets``."""
    if not getattr(model.config, "tie_word_embeddings", False):
        return targets
    embedding = _module_name(model, model.get_input_embeddings())
    head = _module_name(model, model.get_output_embeddings())
    if embedding and head and embedding.split(".")[-1] in targets and head.split(".")[-1] not in targets:
        return targets + [head.split(".")[-1]]
    return targets


def _new_lora(model: PreTrainedModel, finetuning_args: FinetuningArguments) -> PeftModel:
    targets = finetuning_args.lora_targets
    modules_to_save = _tied_head_targets(model, finetuning_args.additional_targets)
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=finetuning_args.lora_rank,
        lora_alpha=finetuning_args.lora_alpha or 2 * finetuning_args.lora_rank,
        lora_dropout=finetuning_args.lora_dropout,
        target_modules="all-linear" if "all" in targets else targets,
        modules_to_save=modules_to_save or None,
        ensure_weight_tying=modules_to_save != finetuning_args.additional_targets,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as error:
        raise UserInputError(f"cannot apply LoRA (lora_target {targets}): {str(error).splitlines()[0]}") from None


def _lora(model: PreTrainedModel, model_args: ModelArguments, finetuning_args: FinetuningArguments,
          is_trainable: bool) -> PreTrainedModel:
    adapters = model_args.adapters
    if not is_trainable:
        return apply_adapters(model, adapters) if adapters else model
    if adapters:
        model = apply_adapters(model, adapters[:-1]) if len(adapters) > 1 else model
        logger.info("continuing to train adapter %s", adapters[-1])
        return load_adapter(model, adapters[-1], is_trainable=True)
    return _new_lora(model, finetuning_args)


def _freeze(model: PreTrainedModel, finetuning_args: FinetuningArguments) -> None:
    """Train the last (or first, if negative) ``freeze_trainable_layers`` layers and the extra modules."""
    count = finetuning_args.freeze_trainable_layers
    total = int(model.config.num_hidden_layers)
    if count == 0 or abs(count) > total:
        raise UserInputError(f"freeze_trainable_layers must be in 1..{total} or -{total}..-1, got {count}")
    layers = set(range(total - count, total)) if count > 0 else set(range(-count))
    modules, extras = finetuning_args.freeze_modules, finetuning_args.freeze_extras
    for name, param in model.named_parameters():
        index = _LAYER_INDEX.search(name)
        in_layer = index is not None and int(index.group(1)) in layers
        in_module = "all" in modules or any(part in modules for part in name.split("."))
        extra = any(part in extras for part in name.split("."))
        param.requires_grad_(bool((in_layer and in_module) or extra))


def setup_finetuning(model: PreTrainedModel, model_args: ModelArguments, finetuning_args: FinetuningArguments,
                     is_trainable: bool) -> PreTrainedModel:
    """Apply the finetuning type; trainable parameters are kept in float32 (mixed precision trains them)."""
    kind = finetuning_args.finetuning_type
    if kind == "lora":
        model = _lora(model, model_args, finetuning_args, is_trainable)
    elif is_trainable and kind == "freeze":
        _freeze(model, finetuning_args)
    if not is_trainable:
        model.requires_grad_(False)
        return model.eval()
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


def log_parameters(model: torch.nn.Module, print_status: bool) -> None:
    """Trainable / total parameter counts, and with ``print_status`` every parameter's state."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("trainable params: %d || all params: %d || trainable%%: %.4f",
                trainable, total, 100 * trainable / max(total, 1))
    if print_status:
        for name, param in model.named_parameters():
            logger.info("%s: dtype=%s device=%s trainable=%s", name, param.dtype, param.device, param.requires_grad)
