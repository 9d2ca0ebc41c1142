"""Stages ``ddm`` (diffusion adaptation / pre-training) and ``ddm-sft`` (diffusion fine-tuning)."""

from __future__ import annotations

from transformers import TrainerCallback

from ...hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments, TrainingArguments
from ..trainer_utils import run_workflow
from .predict import predict_diffusion
from .trainer import DiffusionTrainer


def run_ddm(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments,
            finetuning_args: FinetuningArguments, generating_args: GeneratingArguments,
            callbacks: list[TrainerCallback] | None = None) -> None:
    run_workflow(
        model_args, data_args, training_args, finetuning_args, callbacks,
        trainer_class=DiffusionTrainer,
        trainer_options=lambda parts: {"special_tokens": parts.special, "finetuning_args": finetuning_args},
        predict=lambda trainer, parts: predict_diffusion(trainer, parts.data.eval, parts.tokenizer, finetuning_args,
                                                         generating_args),
        plot_keys=("loss", "unweighted_loss", "eval_loss"),
    )
