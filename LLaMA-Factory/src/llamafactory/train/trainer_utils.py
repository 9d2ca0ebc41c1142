"""The train / evaluate sequence every stage shares, on top of an HF Trainer."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from transformers import Trainer, TrainerCallback

from ..hparams import FinetuningArguments, TrainingArguments
from .plotting import plot_loss

if TYPE_CHECKING:
    from .components import RunComponents

logger = logging.getLogger(__name__)


def perplexity(loss: float) -> float:
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


def run_training(trainer: Trainer, training_args: TrainingArguments, finetuning_args: FinetuningArguments,
                 plot_keys: tuple[str, ...] = ("loss", "eval_loss")) -> None:
    """Train (resuming when asked), save the final model, metrics, state and the loss plot."""
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
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


def trainer_inputs(parts: RunComponents, training_args: TrainingArguments,
                   callbacks: list[TrainerCallback] | None) -> dict[str, Any]:
    """The keyword arguments every stage passes to its Trainer."""
    return {
        "model": parts.model, "args": training_args, "data_collator": parts.collator,
        "train_dataset": parts.data.train, "eval_dataset": parts.data.eval,
        "processing_class": parts.tokenizer, "callbacks": callbacks,
    }


def run_stage(trainer: Trainer, training_args: TrainingArguments, finetuning_args: FinetuningArguments,
              predict: Callable[[], Any] | None = None, plot_keys: tuple[str, ...] = ("loss", "eval_loss")) -> None:
    """``do_train``, then ``do_eval``, then ``do_predict`` (when the stage predicts)."""
    if training_args.do_train:
        run_training(trainer, training_args, finetuning_args, plot_keys)
    if training_args.do_eval:
        run_evaluation(trainer)
    if training_args.do_predict and predict is not None:
        predict()
