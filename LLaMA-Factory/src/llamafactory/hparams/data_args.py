"""Which data to train and evaluate on and how to turn it into token sequences."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .model_args import split_names

# LLaMA-Factory/data inside the source tree (the package is installed editable from it).
DEFAULT_DATASET_DIR = str(Path(__file__).resolve().parents[3] / "data")


@dataclass
class DataArguments:
    """Dataset keys of a training config."""

    dataset: str | None = field(default=None, metadata={"help": "Comma-separated registered dataset names."})
    eval_dataset: str | None = field(
        default=None, metadata={"help": "Comma-separated dataset names for evaluation / prediction."}
    )
    dataset_dir: str = field(
        default=DEFAULT_DATASET_DIR,
        metadata={"help": "Folder holding dataset_info.json and the local files it names."},
    )
    template: str = field(default="empty", metadata={"help": "Prompt template for supervised stages."})
    cutoff_len: int = field(default=1024, metadata={"help": "Sequence length after tokenisation."})
    train_on_prompt: bool = field(default=False, metadata={"help": "sft: also score the prompt tokens."})
    packing: bool | None = field(
        default=None,
        metadata={"help": "Concatenate texts and cut into cutoff_len blocks (default: on for pt and ddm)."},
    )
    streaming: bool = field(default=False, metadata={"help": "Read datasets lazily instead of all at once."})
    buffer_size: int = field(default=16384, metadata={"help": "Shuffle buffer for streaming datasets."})
    max_samples: int | None = field(default=None, metadata={"help": "Keep the first N records of each dataset."})
    val_size: float = field(
        default=0.0, metadata={"help": "Held-out evaluation split: a fraction (< 1) or a record count."}
    )
    tokenized_path: str | None = field(
        default=None,
        metadata={"help": "Load the tokenised data from here; when absent, tokenise, save here and stop."},
    )
    overwrite_cache: bool = field(default=False, metadata={"help": "Ignore the datasets cache when tokenising."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenising."})
    preprocessing_batch_size: int = field(default=1000, metadata={"help": "Records per tokenisation batch."})

    @property
    def dataset_names(self) -> list[str]:
        return split_names(self.dataset)

    @property
    def eval_dataset_names(self) -> list[str]:
        return split_names(self.eval_dataset)
