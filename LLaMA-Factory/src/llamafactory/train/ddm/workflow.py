"""Stages ``ddm`` (diffusion adaptation / pre-training) and ``ddm-sft`` (diffusion fine-tuning)."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from ...hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments, TrainingArguments
from ..components import RunComponents
from ..trainer_utils import run_workflow
from .predict import predict_diffusion
from .trainer import DiffusionTrainer


def run_ddm(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments,
            finetuning_args: FinetuningArguments, generating_args: GeneratingArguments,
            callbacks: list[TrainerCallback] | None = None) -> None:
    def trainer_options(parts: RunComponents) -> dict[str, Any]:
        return {"special_tokens": parts.special, "finetuning_args": finetuning_args}

    def predict(trainer: DiffusionTrainer, parts: RunComponents) -> None:
        predict_diffusion(trainer, parts.data.eval, parts.tokenizer, finetuning_args, generating_args)

    run_workflow(model_args, data_args, training_args, finetuning_args, callbacks, trainer_class=DiffusionTrainer,
                 trainer_options=trainer_options, predict=predict, plot_keys=("loss", "unweighted_loss", "eval_loss"))
