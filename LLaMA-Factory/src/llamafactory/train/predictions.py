"""``do_predict`` output shared by the stages: sharding over processes, the JSONL file and its metrics.

Every process handles the same number of examples (the last one repeated where needed, so that sharded
models run the same number of forward passes); results are gathered, de-duplicated and written once.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sized
from dataclasses import asdict, dataclass
from pathlib import Path

from accelerate.utils import gather_object
from tqdm import tqdm
from transformers import Trainer

from ..utils.distributed import shard_indices
from ..utils.files import atomic_write_text

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "generated_predictions.jsonl"
_GSM_ANSWER = re.compile(r"####\s*(-?[\d,]*\.?\d+)")


@dataclass
class Prediction:
    index: int
    predict: str
    label: str


def gsm_answer(text: str) -> str | None:
    """The number after ``####`` (GSM8K / Diffusion-of-Thought format), normalised: ``1,000.0`` -> ``1000``."""
    match = _GSM_ANSWER.search(text)
    if match is None:
        return None
    number = match.group(1).replace(",", "")
    if "." in number:
        number = number.rstrip("0").rstrip(".") or "0"
    return number


def prediction_metrics(predictions: list[Prediction]) -> dict[str, float]:
    """Sample count, and GSM8K accuracy when every label carries a ``#### n`` answer."""
    metrics: dict[str, float] = {"predict_samples": float(len(predictions))}
    answers = [gsm_answer(p.label) for p in predictions]
    if predictions and all(answer is not None for answer in answers):
        correct = sum(gsm_answer(p.predict) == answer for p, answer in zip(predictions, answers))
        metrics["predict_accuracy"] = correct / len(predictions)
    return metrics


def gather_predictions(local: list[Prediction], world_size: int) -> list[Prediction]:
    """All processes' predictions, one per index, in index order."""
    merged = gather_object(local) if world_size > 1 else local
    unique = {p.index: p for p in merged}
    return [unique[i] for i in sorted(unique)]


def save_predictions(output_dir: str | Path, predictions: list[Prediction]) -> Path:
    """Write ``generated_predictions.jsonl`` (``predict``, ``label``) atomically."""
    path = Path(output_dir) / PREDICTIONS_FILE
    records = ({k: v for k, v in asdict(prediction).items() if k != "index"} for prediction in predictions)
    atomic_write_text(path, (json.dumps(record, ensure_ascii=False) + "\n" for record in records))
    logger.info("predictions saved to %s", path)
    return path


def run_prediction(trainer: Trainer, dataset: Sized, predict_batch: Callable[[list[int]], list[Prediction]],
                   batch_size: int) -> dict[str, float]:
    """Predict this process's shard batch by batch, gather, write the JSONL and the ``predict`` metrics."""
    args = trainer.args
    indices = shard_indices(len(dataset), args.world_size, args.process_index)
    local: list[Prediction] = []
    batches = range(0, len(indices), batch_size)
    for start in tqdm(batches, desc="Predicting", disable=not trainer.is_local_process_zero()):
        local.extend(predict_batch(indices[start : start + batch_size]))
    predictions = gather_predictions(local, args.world_size)
    metrics = prediction_metrics(predictions)
    if trainer.is_world_process_zero():
        save_predictions(args.output_dir, predictions)
    trainer.log_metrics("predict", metrics)
    trainer.save_metrics("predict", metrics)
    return metrics
