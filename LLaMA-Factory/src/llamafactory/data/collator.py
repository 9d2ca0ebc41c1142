"""Batching: right-pad token lists into tensors, with the label / src_mask columns each stage needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .processors import IGNORE_INDEX


def _pad(rows: list[list[int]], width: int, value: int) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


@dataclass
class SequenceCollator:
    """``input_ids`` + ``attention_mask`` always; ``labels`` for AR stages (given, or the inputs with padding
    ignored); ``src_mask`` (bool) when the records carry one."""

    pad_id: int
    with_labels: bool

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [list(f["input_ids"]) for f in features]
        width = max(len(row) for row in ids)
        batch = {
            "input_ids": _pad(ids, width, self.pad_id),
            "attention_mask": _pad([[1] * len(row) for row in ids], width, 0),
        }
        if self.with_labels:
            labels = [list(f["labels"]) for f in features] if "labels" in features[0] else ids
            batch["labels"] = _pad(labels, width, IGNORE_INDEX)
        if "src_mask" in features[0]:
            batch["src_mask"] = _pad([list(f["src_mask"]) for f in features], width, 0).bool()
        return batch
