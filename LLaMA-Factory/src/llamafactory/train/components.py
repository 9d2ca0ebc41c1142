"""Everything a stage needs before its Trainer: tokenizer, checked data, model, special tokens, tokens.

Records are read (and their columns checked) before the model loads, so bad data fails early. Diffusion
stages load the model before tokenising, because their special tokens depend on its embedding table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedModel

from ..data import DatasetSplits, SequenceCollator, load_raw_splits, load_tokenized, tokenize_splits
from ..ddm import SpecialTokens, framing_tokens, record_generation_length
from ..ddm.checkpoints import record_block_size, recorded_block_size
from ..hparams import DataArguments, FinetuningArguments, ModelArguments, TrainingArguments
from ..model import (
    diffusion_special_tokens,
    load_model,
    load_run_tokenizer,
    log_parameters,
    setup_finetuning,
)

logger = logging.getLogger(__name__)


@dataclass
class RunComponents:
    model: PreTrainedModel
    tokenizer: Any
    special: SpecialTokens | None  # diffusion stages only
    data: DatasetSplits
    collator: SequenceCollator


def prepare_components(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments,
                       finetuning_args: FinetuningArguments) -> RunComponents | None:
    """Load and wire the parts of a run; None when the run only tokenised data into ``tokenized_path``."""
    stage = finetuning_args.stage
    tokenizer = load_run_tokenizer(model_args)
    raw = load_raw_splits(data_args, model_args, training_args, stage)
    # diffusion token ids depend on the model's embedding table; AR stages tokenise without the model
    model = load_model(model_args, finetuning_args, training_args) if finetuning_args.is_diffusion else None
    special = diffusion_special_tokens(tokenizer, model) if model is not None else None
    tokens = framing_tokens(tokenizer, special)
    if raw is None:
        data = load_tokenized(data_args, training_args, stage)
    else:
        tokenized = tokenize_splits(raw, tokenizer, tokens, data_args, training_args, stage)
        if tokenized is None:
            return None
        data = tokenized
    if model is None:
        model = load_model(model_args, finetuning_args, training_args)
    if finetuning_args.is_diffusion:
        record_generation_length(model.config, data_args.cutoff_len)
        if finetuning_args.block_size is not None or recorded_block_size(model.config) is not None:
            record_block_size(model.config, finetuning_args.block_size)  # saved with every checkpoint
    model = setup_finetuning(model, model_args, finetuning_args, is_trainable=training_args.do_train)
    if training_args.should_log:
        log_parameters(model, model_args.print_param_status)
    collator = SequenceCollator(pad_id=tokens.pad, with_labels=not finetuning_args.is_diffusion)
    return RunComponents(model=model, tokenizer=tokenizer, special=special, data=data, collator=collator)
