"""Download a FineWeb snapshot (streaming) and write cleaned JSON-lines shards for the ``fineweb`` dataset.

Each record keeps only ``text``, with surrounding whitespace removed; documents shorter than
``--min_chars`` are dropped. Shards are named clean_00000.jsonl, clean_00001.jsonl, ...; join them into the
file dataset_info.json names:

    python LLaMA-Factory/data/data_prepare.py --shards 3
    cat clean_00000.jsonl clean_00001.jsonl clean_00002.jsonl > LLaMA-Factory/data/fineweb-cc-24-0.jsonl

``--source`` may also be a local JSON-lines file with a ``text`` field (no network needed).
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from llamafactory.utils.files import atomic_write_text


def documents(source: str, subset: str) -> Iterator[str]:
    """Texts of a local JSON-lines file, or of a Hub dataset read as a stream."""
    if Path(source).is_file():
        with open(source, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)["text"]
        return
    from datasets import load_dataset

    for record in load_dataset(source, name=subset, split="train", streaming=True):
        yield record["text"]


def write_shards(texts: Iterable[str], output_dir: Path, shards: int, per_shard: int, min_chars: int) -> list[Path]:
    """Write up to ``shards`` files of ``per_shard`` cleaned documents each; returns the files written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    stream = (text.strip() for text in texts)
    kept = (text for text in stream if len(text) >= min_chars)
    for index in range(shards):
        batch = list(itertools.islice(kept, per_shard))
        if not batch:
            break
        path = output_dir / f"clean_{index:05d}.jsonl"
        atomic_write_text(path, (json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in batch))
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="HuggingFaceFW/fineweb", help="Hub dataset id or local .jsonl file")
    parser.add_argument("--subset", default="CC-MAIN-2024-10", help="Hub configuration (FineWeb snapshot)")
    parser.add_argument("--shards", type=int, default=3, help="number of shard files")
    parser.add_argument("--docs_per_shard", type=int, default=1_000_000, help="documents per shard")
    parser.add_argument("--min_chars", type=int, default=200, help="drop shorter documents")
    parser.add_argument("--output_dir", type=Path, default=Path("."), help="where the shards go")
    args = parser.parse_args()
    files = write_shards(documents(args.source, args.subset), args.output_dir, args.shards, args.docs_per_shard,
                        args.min_chars)
    for path in files:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
