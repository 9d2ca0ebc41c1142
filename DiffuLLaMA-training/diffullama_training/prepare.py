"""Tokenize text corpora into TinyLlama packed files for train.py.

    python prepare_data.py --input "raw/slimpajama/*.jsonl" --tokenizer meta-llama/Llama-2-7b-hf \\
        --output-dir data/slim_star_combined --prefix train_slim --workers 16

Each document becomes ``BOS + tokens + EOS`` and documents are packed back to back into chunk files
``{prefix}_{index:010d}.bin`` (docs/design.md#packed-data). Inputs: ``.jsonl``/``.json`` (one JSON object per line, text in
``--column``), ``.parquet`` (column ``--column``) and ``.txt`` (one document per non-empty line); any
of them may be gzip-compressed (``.gz``). Output does not depend on ``--workers``.

Inputs are checked before any tokenizing (text files must be UTF-8 and not empty), and an input that
yields no document is an error. The files are written into a staging folder beside the output and moved
into place only when all are complete, so a failed or interrupted run (or one with ``--overwrite``)
leaves the existing ``{prefix}*.bin`` files as they were.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from llamafactory.ddm import load_tokenizer
from llamafactory.entry_points import run_command
from llamafactory.errors import UserInputError
from llamafactory.utils.encoding import check_not_empty, check_utf8
from llamafactory.utils.files import check_writable_folder, storage_errors

from .packed_dataset import PackedWriter, packed_files, token_dtype

logger = logging.getLogger("prepare_data")

DEFAULT_CHUNK_SIZE = 2049 * 1024  # 1,024 blocks of seq_length 2048 (+1) per file, as TinyLlama
_BATCH = 512
_worker_tokenizer: Any = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True,
                        help="input files or glob patterns (.jsonl, .json, .parquet, .txt, optionally .gz)")
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory or Hub id (usually the base model)")
    parser.add_argument("--output-dir", required=True, help="directory for the packed .bin files")
    parser.add_argument("--prefix", required=True, help="file-name prefix, e.g. train_slim; used by --data-config")
    parser.add_argument("--column", default="text", help="text column of jsonl/parquet inputs (default: text)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                        help=f"tokens per file; a multiple of seq_length + 1 wastes nothing (default {DEFAULT_CHUNK_SIZE})")
    parser.add_argument("--sep-id", type=int, default=None,
                        help="token that fills the end of the last chunk (default: EOS, else BOS)")
    parser.add_argument("--no-bos", action="store_true", help="do not start documents with BOS")
    parser.add_argument("--no-eos", action="store_true", help="do not end documents with EOS")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tokenizer processes (default: all cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing {prefix}*.bin files in --output-dir")
    return parser.parse_args(argv)


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Input files from paths and glob patterns, in sorted order, each checked to exist."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise UserInputError(f"--input pattern {pattern!r} matches no file")
        for match in matches:
            path = Path(match)
            if not path.is_file():
                raise UserInputError(f"--input {path} is not a file")
            files.append(path)
    return files


def _format(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind not in {".jsonl", ".json", ".parquet", ".txt"}:
        raise UserInputError(f"{path}: unsupported input type {kind or '(none)'}; use .jsonl, .json, .parquet or .txt")
    if kind == ".parquet" and path.suffix == ".gz":
        raise UserInputError(f"{path}: parquet files are compressed internally; do not gzip them")
    return kind


def _open_text(path: Path) -> IO[str]:
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def check_input(path: Path) -> None:
    """Fail now on an input that cannot give documents: unsupported, empty, or text that is not UTF-8."""
    kind = _format(path)
    check_not_empty(path)
    if kind != ".parquet":
        check_utf8(path)


def read_documents(path: Path, column: str) -> Iterator[str]:
    """The documents of one input file, in file order; an input that gives none is an error."""
    count = 0
    for document in _documents(path, column):
        count += 1
        yield document
    if count == 0:
        raise UserInputError(f"{path}: no documents (every row's {column!r} is empty, or the file holds no rows)")


def _documents(path: Path, column: str) -> Iterator[str]:
    kind = _format(path)
    if kind == ".parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        if column not in parquet.schema_arrow.names:
            raise UserInputError(f"{path}: no column {column!r} (columns: {', '.join(parquet.schema_arrow.names)})")
        for batch in parquet.iter_batches(columns=[column]):
            yield from (text for text in batch.column(0).to_pylist() if text)
        return
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if kind == ".txt":
                yield line.rstrip("\n")
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserInputError(f"{path}:{number}: not a JSON object per line ({error.msg})") from None
            if not isinstance(record, dict) or column not in record:
                keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                raise UserInputError(f"{path}:{number}: no column {column!r} (found: {keys})")
            if record[column]:
                yield str(record[column])


def _init_worker(tokenizer: Any) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer


def _tokenize(texts: list[str]) -> list[list[int]]:
    return _worker_tokenizer(texts, add_special_tokens=False)["input_ids"]


def _batches(documents: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(documents)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _ordered_map(pool: Any, batches: Iterable[list[str]], window: int) -> Iterator[list[list[int]]]:
    """Tokenize batches on the pool, in input order, with at most ``window`` batches in flight."""
    pending: deque[Any] = deque()
    for batch in batches:
        pending.append(pool.apply_async(_tokenize, (batch,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def separator_id(tokenizer: Any, requested: int | None) -> int:
    """The fill/separator token: the requested id, else EOS, else BOS."""
    for candidate in (requested, tokenizer.eos_token_id, tokenizer.bos_token_id):
        if candidate is not None:
            if not 0 <= candidate < len(tokenizer):
                raise UserInputError(f"--sep-id {candidate} is outside the tokenizer's {len(tokenizer)} ids")
            return int(candidate)
    raise UserInputError("the tokenizer has neither EOS nor BOS; pass --sep-id")


def prepare(args: argparse.Namespace) -> list[Path]:
    """Tokenize every input document and write the packed files; returns them."""
    inputs = expand_inputs(args.input)
    if args.chunk_size < 2:
        raise UserInputError(f"--chunk-size must be at least 2, got {args.chunk_size}")
    if args.workers < 1:
        raise UserInputError(f"--workers must be at least 1, got {args.workers}")
    output_dir = Path(args.output_dir)
    existing = packed_files(output_dir, args.prefix) if output_dir.is_dir() else []
    if existing and not args.overwrite:
        raise UserInputError(
            f"{output_dir} already holds {len(existing)} {args.prefix}*.bin files; pass --overwrite to replace them"
        )
    check_writable_folder(output_dir, "--output-dir")
    for path in inputs:
        check_input(path)
    tokenizer = load_tokenizer(args.tokenizer)
    sep = separator_id(tokenizer, args.sep_id)
    head = [] if args.no_bos or tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    tail = [] if args.no_eos or tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{args.prefix}.partial-", dir=output_dir))
    try:
        with storage_errors(f"packed files to {output_dir}", kept=f"its existing {args.prefix}*.bin files are intact"):
            written = _write_packed(args, inputs, tokenizer, staging, sep, head, tail)
            files = _swap_in(written, existing, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("wrote %d file(s) of %d tokens to %s", len(files), args.chunk_size, output_dir)
    return files


def _write_packed(args: argparse.Namespace, inputs: list[Path], tokenizer: Any, staging: Path, sep: int,
                  head: list[int], tail: list[int]) -> list[Path]:
    """Tokenize the documents of ``inputs`` into packed files in ``staging``."""
    documents = (doc for path in inputs for doc in read_documents(path, args.column))
    batches = _batches(documents, _BATCH)
    writer = PackedWriter(staging, args.prefix, args.chunk_size, sep, token_dtype(len(tokenizer)))
    progress = tqdm(unit="docs", desc=f"tokenizing {len(inputs)} file(s)", dynamic_ncols=True)
    if args.workers == 1:
        _init_worker(tokenizer)
        tokenized: Iterable[list[list[int]]] = map(_tokenize, batches)
        pool = None
    else:
        pool = multiprocessing.Pool(args.workers, initializer=_init_worker, initargs=(tokenizer,))
        tokenized = _ordered_map(pool, batches, window=4 * args.workers)
    try:
        for batch in tokenized:
            for ids in batch:
                writer.add(head + list(ids) + tail)
            progress.update(len(batch))
    finally:
        progress.close()
        if pool is not None:
            pool.terminate()
    return writer.close()


def _swap_in(written: list[Path], existing: list[Path], output_dir: Path) -> list[Path]:
    """Move the complete new files into ``output_dir``; then remove the old files they did not replace."""
    files = []
    for path in written:
        files.append(output_dir / path.name)
        os.replace(path, files[-1])
    for old in set(existing) - set(files):
        old.unlink()
    return files


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_command(lambda: prepare(parse_args(argv)))
