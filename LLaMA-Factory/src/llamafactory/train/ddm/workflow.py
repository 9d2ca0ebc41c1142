"""Stages ``ddm`` (diffusion adaptation / pre-training) and ``ddm-sft`` (diffusion fine-tuning)."""

from __future__ import annotations

from transformers import PreTrainedModel, TrainerCallback

from ...hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments, TrainingArguments
from ..components import prepare_components
from ..trainer_utils import run_stage, trainer_inputs
from .predict import predict_diffusion
from .trainer import DiffusionTrainer


def record_generation_length(model: PreTrainedModel, length: int) -> None:
    """Store the sampling length in the config (``task_specific_params``), where the loaders look for it."""
    params = dict(getattr(model.config, "task_specific_params", None) or {})
    params["text-generation"] = {**params.get("text-generation", {}), "do_sample": True, "max_length": length}
    model.config.task_specific_params = params


def run_ddm(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments,
            finetuning_args: FinetuningArguments, generating_args: GeneratingArguments,
            callbacks: list[TrainerCallback] | None = None) -> None:
    parts = prepare_components(model_args, data_args, training_args, finetuning_args)
    if parts is None:
        return
    record_generation_length(parts.model, data_args.cutoff_len)
    trainer = DiffusionTrainer(**trainer_inputs(parts, training_args, callbacks), special_tokens=parts.special,
                               finetuning_args=finetuning_args)
    run_stage(trainer, training_args, finetuning_args,
              predict=lambda: predict_diffusion(trainer, parts.data.eval, parts.tokenizer, finetuning_args, generating_args),
              plot_keys=("loss", "unweighted_loss", "eval_loss"))
