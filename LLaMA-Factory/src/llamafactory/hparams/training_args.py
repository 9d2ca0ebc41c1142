"""HF ``Seq2SeqTrainingArguments`` plus the one output key transformers 5 dropped."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import Seq2SeqTrainingArguments


@dataclass
class TrainingArguments(Seq2SeqTrainingArguments):
    """Trainer keys of a config; ``overwrite_output_dir`` guards a non-empty ``output_dir``."""

    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into a non-empty output_dir (otherwise an error)."}
    )
