"""The model of a run: base weights (any layout), ``checkpoint_dir`` over them, attention and dtype."""

from __future__ import annotations

import logging

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from ..ddm import apply_adapters, detect_layout, is_adapter_dir, load_causal_lm, load_weights_into, make_bidirectional
from ..hparams import FinetuningArguments, ModelArguments, TrainingArguments
from ..utils.hub import resolve_checkpoint_dir

logger = logging.getLogger(__name__)


def compute_dtype(training_args: TrainingArguments) -> torch.dtype:
    if training_args.bf16:
        return torch.bfloat16
    if training_args.fp16:
        return torch.float16
    return torch.float32


def load_base_model(model_args: ModelArguments, dtype: torch.dtype) -> PreTrainedModel:
    """``model_name_or_path`` as a causal LM: an ordinary checkpoint, or a DiffuGPT wrapper-layout one."""
    directory = resolve_checkpoint_dir(model_args.model_name_or_path, revision=model_args.model_revision)
    if detect_layout(directory) == "wrapper":
        return load_causal_lm(directory, dtype=dtype, attn_implementation=model_args.attn_implementation,
                              trust_remote_code=model_args.trust_remote_code)
    return AutoModelForCausalLM.from_pretrained(
        directory, dtype=dtype, attn_implementation=model_args.attn_implementation,
        trust_remote_code=model_args.trust_remote_code,
    )


def load_model(model_args: ModelArguments, finetuning_args: FinetuningArguments,
               training_args: TrainingArguments) -> PreTrainedModel:
    """Base model, then ``checkpoint_dir`` (weights, or a LoRA adapter merged in); bidirectional for the
    diffusion stages."""
    model = load_base_model(model_args, compute_dtype(training_args))
    if model_args.checkpoint_dir:
        directory = resolve_checkpoint_dir(model_args.checkpoint_dir)
        if is_adapter_dir(directory):
            logger.info("merging the adapter %s into the base model", directory)
            model = apply_adapters(model, [directory])
        else:
            logger.info("loading diffusion weights from %s", directory)
            load_weights_into(model, directory)
    if finetuning_args.is_diffusion:
        make_bidirectional(model)
    model.config.use_cache = False
    return model
