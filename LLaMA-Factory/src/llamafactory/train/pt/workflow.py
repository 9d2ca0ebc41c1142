"""Stage ``pt``: autoregressive (continued) pre-training with the model's own next-token loss."""

from __future__ import annotations

from transformers import Seq2SeqTrainer, TrainerCallback

from ...hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments, TrainingArguments
from ..components import prepare_components
from ..trainer_utils import run_stage, trainer_inputs


def run_pt(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments,
           finetuning_args: FinetuningArguments, generating_args: GeneratingArguments,
           callbacks: list[TrainerCallback] | None = None) -> None:
    parts = prepare_components(model_args, data_args, training_args, finetuning_args)
    if parts is None:
        return
    trainer = Seq2SeqTrainer(**trainer_inputs(parts, training_args, callbacks))
    run_stage(trainer, training_args, finetuning_args)
