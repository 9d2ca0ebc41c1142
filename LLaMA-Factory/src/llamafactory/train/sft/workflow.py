"""Stage ``sft``: autoregressive supervised fine-tuning (prompt tokens out of the loss), with generation."""

from __future__ import annotations

from typing import Any

from transformers import Seq2SeqTrainer, TrainerCallback

from ...data import IGNORE_INDEX
from ...ddm import generate_continuations
from ...hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments, TrainingArguments
from ..components import RunComponents
from ..predictions import Prediction, run_prediction
from ..trainer_utils import run_workflow


def _split_record(record: dict[str, Any]) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of a tokenised sft record: the response is where labels are kept."""
    ids, labels = list(record["input_ids"]), list(record["labels"])
    start = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(ids))
    return ids[:start], ids[start:]


def predict_autoregressive(trainer: Seq2SeqTrainer, dataset: Any, tokenizer: Any,
                           generating_args: GeneratingArguments) -> dict[str, float]:
    """Greedy or sampled ``generate`` from each prompt; writes generated_predictions.jsonl."""
    model = trainer.model.to(trainer.args.device).eval()
    pad, eos = trainer.data_collator.pad_id, tokenizer.eos_token_id

    def decode(ids: list[int]) -> str:
        if eos in ids:
            ids = ids[: ids.index(eos)]
        return tokenizer.decode(ids, skip_special_tokens=True).strip()

    def predict_batch(indices: list[int]) -> list[Prediction]:
        pairs = [_split_record(dataset[i]) for i in indices]
        with trainer.accelerator.autocast():
            generated = generate_continuations(
                model, [prompt for prompt, _ in pairs], generating_args.max_new_tokens, pad_id=pad,
                eos_ids=() if eos is None else (eos,),
                do_sample=not generating_args.greedy and generating_args.logits_temp > 0,
                temperature=generating_args.logits_temp, top_p=generating_args.topp_temp,
            )
        return [Prediction(index=i, predict=decode(ids), label=decode(response))
                for i, ids, (_, response) in zip(indices, generated, pairs)]

    return run_prediction(trainer, dataset, predict_batch, trainer.args.per_device_eval_batch_size)


def run_sft(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments,
            finetuning_args: FinetuningArguments, generating_args: GeneratingArguments,
            callbacks: list[TrainerCallback] | None = None) -> None:
    def predict(trainer: Seq2SeqTrainer, parts: RunComponents) -> None:
        predict_autoregressive(trainer, parts.data.eval, parts.tokenizer, generating_args)

    run_workflow(model_args, data_args, training_args, finetuning_args, callbacks, predict=predict)
