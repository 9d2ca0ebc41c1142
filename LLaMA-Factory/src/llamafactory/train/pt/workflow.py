"""Stage ``pt``: autoregressive (continued) pre-training with the model's own next-token loss."""

from __future__ import annotations

from transformers import TrainerCallback

from ...hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments, TrainingArguments
from ..trainer_utils import run_workflow


def run_pt(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments,
           finetuning_args: FinetuningArguments, generating_args: GeneratingArguments,
           callbacks: list[TrainerCallback] | None = None) -> None:
    run_workflow(model_args, data_args, training_args, finetuning_args, callbacks)
