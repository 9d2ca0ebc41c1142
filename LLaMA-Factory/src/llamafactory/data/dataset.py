"""From registered names to tokenised train / eval splits, with ``tokenized_path`` save-and-reload.

Two phases so that bad data fails before the model loads: ``load_raw_splits`` reads and checks the
records (registry, files, columns, split); ``tokenize_splits`` needs the model's special tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import Dataset, DatasetDict, IterableDataset, load_from_disk

from ..errors import UserInputError
from .loader import AnyDataset, load_merged
from .processors import FramingTokens, ddm_sft_batch, pretrain_batch, supervised_batch
from .registry import check_datasets
from .templates import get_template

if TYPE_CHECKING:
    from ..hparams import DataArguments, ModelArguments, TrainingArguments

logger = logging.getLogger(__name__)

STAGE_COLUMNS = {"pt": ("input_ids",), "ddm": ("input_ids",), "sft": ("input_ids", "labels"),
                 "ddm-sft": ("input_ids", "src_mask")}


@dataclass
class DatasetSplits:
    """Train and evaluation data (raw records or token sequences); either may be None."""

    train: AnyDataset | None
    eval: AnyDataset | None


def has_tokenized_data(path: str | None) -> bool:
    return path is not None and Path(path).is_dir() and any(Path(path).iterdir())


def split_validation(train: AnyDataset, val_size: float, seed: int, keep_train: bool) -> DatasetSplits:
    """Hold out ``val_size`` sequences (a count, or a fraction) of ``train`` for evaluation.

    Without ``keep_train`` (evaluation / prediction only) nothing needs to remain for training, so the
    held-out part is simply capped at the whole dataset.
    """
    if isinstance(train, IterableDataset):
        count = int(val_size)
        return DatasetSplits(train=train.skip(count) if keep_train else None, eval=train.take(count))
    size = int(val_size) if val_size >= 1 else val_size
    if isinstance(size, int) and size >= len(train):
        if keep_train:
            raise UserInputError(f"val_size {size} leaves no training data ({len(train)} sequences)")
        return DatasetSplits(train=None, eval=train)
    parts = train.train_test_split(test_size=size, seed=seed)
    return DatasetSplits(train=parts["train"] if keep_train else None, eval=parts["test"])


def load_raw_splits(data_args: DataArguments, model_args: ModelArguments, training_args: TrainingArguments,
                    stage: str) -> DatasetSplits | None:
    """Records of ``dataset`` and ``eval_dataset`` (not yet split), or None when ``tokenized_path`` holds tokens."""
    if has_tokenized_data(data_args.tokenized_path):
        logger.info("using the tokenised data in %s; other data keys are ignored", data_args.tokenized_path)
        return None
    supervised = stage in ("sft", "ddm-sft")
    train_attrs = check_datasets(data_args.dataset_names, data_args.dataset_dir, stage)
    eval_attrs = check_datasets(data_args.eval_dataset_names, data_args.dataset_dir, stage)
    needs_train = training_args.do_train or not eval_attrs  # without eval_dataset, evaluation comes from it
    train = load_merged(train_attrs, data_args, model_args, supervised) if train_attrs and needs_train else None
    evaluation = load_merged(eval_attrs, data_args, model_args, supervised) if eval_attrs else None
    if evaluation is not None and data_args.val_size > 0:
        logger.warning("eval_dataset is given: val_size %s is ignored", data_args.val_size)
    return DatasetSplits(train=train, eval=evaluation)


def _stage_function(stage: str, tokenizer: Any, tokens: FramingTokens, data_args: DataArguments):
    common = {"tokenizer": tokenizer, "tokens": tokens, "cutoff_len": data_args.cutoff_len}
    if stage in ("pt", "ddm"):
        return partial(pretrain_batch, packing=bool(data_args.packing), **common)
    template = get_template(data_args.template)
    if stage == "sft":
        return partial(supervised_batch, template=template, train_on_prompt=data_args.train_on_prompt, **common)
    return partial(ddm_sft_batch, template=template, **common)


def _tokenize(dataset: AnyDataset, function, data_args: DataArguments, name: str) -> AnyDataset:
    columns = dataset.column_names or list(next(iter(dataset)))
    options: dict[str, Any] = {"batched": True, "batch_size": data_args.preprocessing_batch_size,
                               "remove_columns": columns}
    if isinstance(dataset, Dataset):
        options.update(num_proc=data_args.preprocessing_num_workers,
                       load_from_cache_file=not data_args.overwrite_cache, desc=f"Tokenising {name}")
    return dataset.map(function, **options)


def _check_columns(dataset: AnyDataset, stage: str, source: str) -> None:
    columns = dataset.column_names or list(next(iter(dataset)))
    missing = [c for c in STAGE_COLUMNS[stage] if c not in columns]
    if missing:
        raise UserInputError(
            f"{source} lacks column(s) {', '.join(missing)} that stage {stage} needs (it has {', '.join(columns)}); "
            "tokenise again for this stage"
        )


def load_tokenized(data_args: DataArguments, training_args: TrainingArguments, stage: str) -> DatasetSplits:
    """Splits saved earlier in ``tokenized_path``, checked for the stage's columns."""
    saved = load_from_disk(data_args.tokenized_path)
    if not isinstance(saved, DatasetDict):
        saved = DatasetDict({"train": saved})
    splits = DatasetSplits(train=saved.get("train") if training_args.do_train else None,
                           eval=saved.get("validation"))
    for split in (splits.train, splits.eval):
        if split is not None:
            _check_columns(split, stage, f"tokenized_path {data_args.tokenized_path}")
    return splits


def tokenize_splits(raw: DatasetSplits, tokenizer: Any, tokens: FramingTokens, data_args: DataArguments,
                    training_args: TrainingArguments, stage: str) -> DatasetSplits | None:
    """Token sequences for the stage; None after saving them to ``tokenized_path`` (the run stops there)."""
    function = _stage_function(stage, tokenizer, tokens, data_args)
    with training_args.main_process_first(desc="tokenising"):
        splits = DatasetSplits(
            train=_tokenize(raw.train, function, data_args, "train") if raw.train is not None else None,
            eval=_tokenize(raw.eval, function, data_args, "eval") if raw.eval is not None else None,
        )
    for name, split in (("training", splits.train), ("evaluation", splits.eval)):
        if isinstance(split, Dataset) and len(split) == 0:
            raise UserInputError(
                f"no {name} sequences after tokenising (cutoff_len {data_args.cutoff_len} longer than all the text "
                "together with packing?)"
            )
    if splits.eval is None and splits.train is not None and data_args.val_size > 0:
        splits = split_validation(splits.train, data_args.val_size, training_args.seed, training_args.do_train)
    if not training_args.do_train:
        splits.train = None
    if isinstance(splits.train, IterableDataset):
        splits.train = splits.train.shuffle(seed=training_args.seed, buffer_size=data_args.buffer_size)
    if data_args.tokenized_path is None:
        return splits
    if training_args.should_save:
        parts = {"train": splits.train, "validation": splits.eval}
        DatasetDict({k: v for k, v in parts.items() if v is not None}).save_to_disk(data_args.tokenized_path)
        logger.info("tokenised data saved to %s; run again with the same tokenized_path to train on it",
                    data_args.tokenized_path)
    return None
