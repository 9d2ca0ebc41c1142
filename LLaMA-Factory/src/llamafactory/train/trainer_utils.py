"""The sequence every stage shares on top of an HF Trainer: build, train, evaluate, predict."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from transformers import Seq2SeqTrainer, Trainer, TrainerCallback

from ..hparams import DataArguments, FinetuningArguments, ModelArguments, TrainingArguments
from .checkpoints import AtomicCheckpoints, resume_checkpoint
from .components import RunComponents, prepare_components
from .plotting import plot_loss

logger = logging.getLogger(__name__)


class StageTrainer(AtomicCheckpoints, Seq2SeqTrainer):
    """The Trainer of the autoregressive stages: HF's, with checkpoints that appear only when complete."""


def perplexity(loss: float) -> float:
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


def run_training(trainer: Trainer, training_args: TrainingArguments, finetuning_args: FinetuningArguments,
                 plot_keys: tuple[str, ...] = ("loss", "eval_loss")) -> None:
    """Train (resuming when asked), save the final model, metrics, state and the loss plot."""
    resume = resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_final_model()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    if finetuning_args.plot_loss and trainer.is_world_process_zero():
        plot_loss(training_args.output_dir, keys=plot_keys)


def run_evaluation(trainer: Trainer) -> dict[str, float]:
    """Evaluate; adds ``eval_perplexity = exp(eval_loss)`` when the trainer did not."""
    metrics = trainer.evaluate(metric_key_prefix="eval")
    if "eval_loss" in metrics and "eval_perplexity" not in metrics:
        metrics["eval_perplexity"] = perplexity(metrics["eval_loss"])
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    return metrics


def run_workflow(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments,
                 finetuning_args: FinetuningArguments, callbacks: list[TrainerCallback] | None = None, *,
                 trainer_class: type[Trainer] = StageTrainer,
                 trainer_options: Callable[[RunComponents], dict[str, Any]] | None = None,
                 predict: Callable[[Trainer, RunComponents], Any] | None = None,
                 plot_keys: tuple[str, ...] = ("loss", "eval_loss")) -> None:
    """Build the run's parts and Trainer, then ``do_train``, ``do_eval`` and ``do_predict`` (if the stage predicts)."""
    parts = prepare_components(model_args, data_args, training_args, finetuning_args)
    if parts is None:
        return
    trainer = trainer_class(
        model=parts.model, args=training_args, data_collator=parts.collator, train_dataset=parts.data.train,
        eval_dataset=parts.data.eval, processing_class=parts.tokenizer, callbacks=callbacks,
        **(trainer_options(parts) if trainer_options else {}),
    )
    if training_args.do_train:
        run_training(trainer, training_args, finetuning_args, plot_keys)
    if training_args.do_eval:
        run_evaluation(trainer)
    if training_args.do_predict and predict is not None:
        predict(trainer, parts)
