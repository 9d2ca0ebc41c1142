"""``do_predict`` for the diffusion stages: reverse diffusion over the evaluation records (docs/design.md#sampling).

ddm-sft records keep their prompt (``src_mask``) and the response region is generated; the prediction and
the label are the text between the separator and the first EOS. ddm records are generated from the first
token alone (unconditional) and compared as whole texts. Records of a batch are padded to one width with
the padding hidden from attention and never generated; each record's noise comes from its own generator
(seed + record index), so results do not depend on batching or the number of processes.
"""

from __future__ import annotations

from typing import Any

import torch

from ...ddm import sample
from ...hparams import FinetuningArguments, GeneratingArguments
from ..predictions import Prediction, run_prediction
from .trainer import DiffusionTrainer


def _text(tokenizer: Any, ids: list[int], start: int, eos: int | None, cut_at_eos: bool) -> str:
    span = ids[start:]
    if cut_at_eos and eos is not None and eos in span:
        span = span[: span.index(eos)]
    return tokenizer.decode(span, skip_special_tokens=True).strip()


def predict_diffusion(trainer: DiffusionTrainer, dataset: Any, tokenizer: Any, finetuning_args: FinetuningArguments,
                      generating_args: GeneratingArguments) -> dict[str, float]:
    """Sample every evaluation record, write generated_predictions.jsonl and return the predict metrics."""
    model = trainer.diffusion_model()
    config = generating_args.sampling_config(finetuning_args.diffusion_steps, finetuning_args.shift)
    eos = trainer.special_tokens.eos_id
    device = trainer.args.device

    def predict_batch(indices: list[int]) -> list[Prediction]:
        records = [dataset[i] for i in indices]
        width = max(len(r["input_ids"]) for r in records)
        pad = trainer.data_collator.pad_id
        ids = torch.full((len(records), width), pad, dtype=torch.long)
        given = torch.zeros((len(records), width), dtype=torch.bool)
        real = torch.zeros((len(records), width), dtype=torch.long)
        for row, record in enumerate(records):
            ids[row, : len(record["input_ids"])] = torch.as_tensor(record["input_ids"])
            real[row, : len(record["input_ids"])] = 1
            if "src_mask" in record:
                given[row, : len(record["src_mask"])] = torch.as_tensor(record["src_mask"], dtype=torch.bool)
        generators = [torch.Generator(device=device).manual_seed(trainer.args.seed + i) for i in indices]
        with trainer.accelerator.autocast():
            output = sample(model, ids.to(device), model.mask_id, config, src_mask=given.to(device),
                            attention_mask=None if bool(real.all()) else real.to(device), generator=generators)
        predictions = []
        for row, (index, record) in enumerate(zip(indices, records)):
            supervised = "src_mask" in record
            start = int(sum(record["src_mask"])) if supervised else 0
            generated = output.tokens[row, : len(record["input_ids"])].tolist()
            predictions.append(Prediction(
                index=index,
                predict=_text(tokenizer, generated, start, eos, cut_at_eos=supervised),
                label=_text(tokenizer, list(record["input_ids"]), start, eos, cut_at_eos=supervised),
            ))
        return predictions

    return run_prediction(trainer, dataset, predict_batch, trainer.args.per_device_eval_batch_size)
