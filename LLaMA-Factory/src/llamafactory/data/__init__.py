"""Data: registry (dataset_info.json) -> load -> process per stage -> collate."""

from .collator import SequenceCollator
from .dataset import DatasetSplits, has_tokenized_data, load_raw_splits, load_tokenized, tokenize_splits
from .processors import IGNORE_INDEX
from .registry import DatasetAttr, get_dataset_attrs
from .templates import TEMPLATES, get_template

__all__ = [
    "IGNORE_INDEX", "TEMPLATES", "DatasetAttr", "DatasetSplits", "SequenceCollator",
    "get_dataset_attrs", "get_template", "has_tokenized_data", "load_raw_splits", "load_tokenized",
    "tokenize_splits",
]
