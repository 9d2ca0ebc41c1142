"""Read registered datasets (local files/folders or the Hub) into one schema per stage family.

Pre-training stages get a ``text`` column; supervised stages get ``prompt`` (with an alpaca ``input``
appended), ``response`` and ``system``. A missing column fails here, naming the dataset, the column and
the columns the file does have; so do an empty file, a dataset without records and text files that are
not UTF-8 (with the byte offset).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import Dataset, IterableDataset, concatenate_datasets, load_dataset

from ..errors import UserInputError
from ..utils.encoding import check_not_empty, check_utf8
from .registry import DatasetAttr

if TYPE_CHECKING:
    from ..hparams import DataArguments, ModelArguments

logger = logging.getLogger(__name__)

AnyDataset = Dataset | IterableDataset
BUILDERS = {".json": "json", ".jsonl": "json", ".txt": "text", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}
TEXT_BUILDERS = ("json", "text", "csv")


def _local_files(attr: DatasetAttr) -> tuple[str, list[str]]:
    """The ``datasets`` builder and the file list of a local file or folder."""
    path = Path(attr.path)
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) if path.is_dir() else [path]
    kinds = {BUILDERS.get(p.suffix.lower()) for p in files}
    if not files or None in kinds or len(kinds) != 1:
        found = ", ".join(sorted({p.suffix or p.name for p in files})) or "nothing"
        raise UserInputError(
            f"{attr.describe()}: expected files of one type among {', '.join(BUILDERS)}; found {found}"
        )
    builder = kinds.pop()
    for file in files:
        check_not_empty(file)
        if builder in TEXT_BUILDERS:
            check_utf8(file)
    return builder, [str(p) for p in files]


def load_source(attr: DatasetAttr, data_args: DataArguments, model_args: ModelArguments) -> AnyDataset:
    """The dataset as stored, before column mapping."""
    try:
        if attr.source == "file":
            builder, files = _local_files(attr)
            dataset = load_dataset(builder, data_files=files, split="train", streaming=data_args.streaming,
                                   cache_dir=model_args.cache_dir)
        else:
            dataset = load_dataset(attr.path, name=attr.subset, data_dir=attr.folder, split=attr.split,
                                   streaming=data_args.streaming, cache_dir=model_args.cache_dir)
    except UserInputError:
        raise
    except Exception as error:  # missing files, bad JSON, no network: all mean "cannot read this dataset"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserInputError(f"cannot load {attr.describe()}: {type(error).__name__}: {reason}") from None
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        raise UserInputError(f"{attr.describe()} holds no records ({attr.path})")
    return dataset


def _column_names(dataset: AnyDataset) -> list[str]:
    if dataset.column_names is not None:
        return list(dataset.column_names)
    first = next(iter(dataset), None)
    return list(first) if first is not None else []


def _mapping(attr: DatasetAttr, supervised: bool, available: list[str]) -> dict[str, str]:
    """Role -> source column, checked against the columns the data has."""
    if supervised:
        mapping = attr.supervised_columns()
        required = ("prompt", "response")
        # alpaca's optional fields may simply be absent from a file
        mapping = {role: col for role, col in mapping.items() if role in required or col in available}
    else:
        mapping, required = {"text": attr.text_column()}, ("text",)
    for role in required:
        if mapping[role] not in available:
            raise UserInputError(
                f"{attr.describe()}: column '{mapping[role]}' (role {role}) not found; "
                f"the data has columns: {', '.join(available) or 'none'}"
            )
    return mapping


def _to_text(mapping: dict[str, str]):
    def convert(batch: dict[str, list[Any]]) -> dict[str, list[str]]:
        return {"text": ["" if value is None else str(value) for value in batch[mapping["text"]]]}
    return convert


def _to_supervised(mapping: dict[str, str]):
    def convert(batch: dict[str, list[Any]]) -> dict[str, list[str]]:
        size = len(batch[mapping["prompt"]])
        queries = batch[mapping["query"]] if "query" in mapping else [None] * size
        systems = batch[mapping["system"]] if "system" in mapping else [None] * size
        prompts = [str(prompt or "") + (f"\n{query}" if query else "")
                   for prompt, query in zip(batch[mapping["prompt"]], queries)]
        return {
            "prompt": prompts,
            "response": ["" if value is None else str(value) for value in batch[mapping["response"]]],
            "system": ["" if value is None else str(value) for value in systems],
        }
    return convert


def load_standardized(attr: DatasetAttr, data_args: DataArguments, model_args: ModelArguments,
                      supervised: bool) -> AnyDataset:
    """One registered dataset in the stage schema, cut to ``max_samples``."""
    dataset = load_source(attr, data_args, model_args)
    if data_args.max_samples is not None:
        if isinstance(dataset, IterableDataset):
            dataset = dataset.take(data_args.max_samples)
        else:
            dataset = dataset.select(range(min(data_args.max_samples, len(dataset))))
    available = _column_names(dataset)
    mapping = _mapping(attr, supervised, available)
    convert = _to_supervised(mapping) if supervised else _to_text(mapping)
    options: dict[str, Any] = {"batched": True, "remove_columns": available}
    if isinstance(dataset, Dataset):
        options.update(num_proc=data_args.preprocessing_num_workers, load_from_cache_file=not data_args.overwrite_cache,
                       desc=f"Reading {attr.name}")
    return dataset.map(convert, **options)


def load_merged(attrs: list[DatasetAttr], data_args: DataArguments, model_args: ModelArguments,
                supervised: bool) -> AnyDataset:
    """Several registered datasets concatenated, in the stage schema."""
    parts = [load_standardized(attr, data_args, model_args, supervised) for attr in attrs]
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)
