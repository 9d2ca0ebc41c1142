"""Real English text for the mini-paper pipeline, split into training and held-out documents.

The text comes from a local file or folder (``--text``) or, by default, from WikiText-2
(``Salesforce/wikitext``, configuration ``wikitext-2-raw-v1``, split ``train``) on the Hugging Face Hub.
It is cut into documents — a WikiText article, or a run of consecutive paragraphs (blocks separated by
blank lines) of at least ``--doc-chars`` characters from one local file — and a seeded random
``--heldout`` share of the documents is held out: no held-out document is ever trained on.

Writes ``train.jsonl`` (training documents), ``test.jsonl`` (all held-out documents),
``valid.jsonl`` (the first held-out documents, about ``--valid-chars`` characters: the validation set
scored every few steps while training), the ``dataset_info.json`` that registers ``mini_train`` and
``mini_valid`` for ``llamafactory-cli``, and ``source.json`` (where the text came from, sizes, sha256).

    python prepare_text.py --out output/mini-paper/data --text /path/to/input.txt
    python prepare_text.py --out output/mini-paper/data          # WikiText-2 from the Hub (online)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import re
import socket
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from llamafactory.entry_points import run_command
from llamafactory.errors import UserInputError
from llamafactory.utils.files import atomic_write_text

logger = logging.getLogger(__name__)

HUB_DATASET = ("Salesforce/wikitext", "wikitext-2-raw-v1", "train")
SET_MINI_TEXT = "set MINI_TEXT=/path/to/text (a UTF-8 text file, or a folder of .txt files) to use local text"
DATASET_INFO = {
    "mini_train": {"file_name": "train.jsonl", "columns": {"prompt": "text"}},
    "mini_valid": {"file_name": "valid.jsonl", "columns": {"prompt": "text"}},
}
BLANK_LINES = re.compile(r"\n[ \t]*\n")
ARTICLE_TITLE = re.compile(r"^ = [^=].* = $")  # " = Title = "; sections are " = = Section = = "


@dataclass(frozen=True)
class Text:
    """Documents in their original order, and where they came from."""

    documents: list[str]
    source: dict[str, object]


def paragraphs(text: str) -> list[str]:
    """Blocks of text separated by blank lines, stripped, without empty ones."""
    return [block.strip() for block in BLANK_LINES.split(text.replace("\r\n", "\n")) if block.strip()]


def group_paragraphs(blocks: Iterable[str], min_chars: int) -> list[str]:
    """Consecutive paragraphs joined (blank line between) until each document has ``min_chars``; the
    last, shorter run joins the document before it."""
    documents: list[str] = []
    current: list[str] = []
    size = 0
    for block in blocks:
        current.append(block)
        size += len(block)
        if size >= min_chars:
            documents.append("\n\n".join(current))
            current, size = [], 0
    if current:
        tail = "\n\n".join(current)
        if documents:
            documents[-1] += "\n\n" + tail
        else:
            documents.append(tail)
    return documents


def text_files(path: Path) -> list[Path]:
    """``path`` itself, or the ``.txt`` files under the folder ``path`` (recursively, sorted)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise UserInputError(f"MINI_TEXT folder {path} holds no .txt file")
        return files
    raise UserInputError(f"MINI_TEXT {path} does not exist; expected a text file or a folder of .txt files")


def local_text(path: Path, min_chars: int) -> Text:
    """Documents from the files at ``path``; a document never spans two files."""
    digest = hashlib.sha256()
    documents: list[str] = []
    files = text_files(path)
    for file in files:
        data = file.read_bytes()
        digest.update(data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UserInputError(f"{file} is not UTF-8 text (byte {error.start}); convert it first") from None
        documents += group_paragraphs(paragraphs(text), min_chars)
    source = {"kind": "local", "path": str(path), "files": len(files), "sha256": digest.hexdigest()}
    return Text(documents, source)


def hub_reachable(timeout: float = 10.0) -> bool:
    """Whether the Hub's host accepts a connection (one try, so that an offline machine fails fast)."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def wikitext_articles(lines: Iterable[str]) -> Iterator[str]:
    """WikiText lines (one paragraph or heading each) grouped into articles at their ``= Title =`` lines."""
    article: list[str] = []
    for line in lines:
        line = line.strip("\n")
        if ARTICLE_TITLE.match(line) and article:
            yield "\n\n".join(article)
            article = []
        if line.strip():
            article.append(line.strip())
    if article:
        yield "\n\n".join(article)


def hub_text() -> Text:
    """WikiText-2 (raw) articles from the Hub, or from the local ``datasets`` cache when offline."""
    from huggingface_hub import constants

    name, config, split = HUB_DATASET
    if not constants.HF_HUB_OFFLINE and not hub_reachable():
        raise UserInputError(f"cannot reach the Hugging Face Hub ({constants.ENDPOINT}) to download {name} "
                             f"({config}); {SET_MINI_TEXT}")
    from datasets import load_dataset

    try:
        rows = load_dataset(name, config, split=split)
    except Exception as error:  # offline without a cached copy, or any download failure
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserInputError(f"cannot load {name} ({config}) from the Hugging Face Hub: {reason}; {SET_MINI_TEXT}") from None
    documents = list(wikitext_articles(rows["text"]))
    fingerprint = getattr(rows, "_fingerprint", "")
    source = {"kind": "hub", "dataset": name, "config": config, "split": split, "fingerprint": fingerprint}
    return Text(documents, source)


def split_documents(count: int, heldout: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of the training and held-out documents (each in the original order)."""
    if count < 2:
        raise UserInputError(f"the text has {count} document(s); need at least 2 to hold some out (more text, or a "
                             "smaller --doc-chars)")
    size = min(count - 1, max(1, round(count * heldout)))
    chosen = set(random.Random(seed).sample(range(count), size))
    return [i for i in range(count) if i not in chosen], sorted(chosen)


def leading_documents(documents: list[str], chars: int) -> list[str]:
    """The first documents whose total length reaches ``chars`` (all of them when it never does)."""
    taken, size = [], 0
    for document in documents:
        if size >= chars:
            break
        taken.append(document)
        size += len(document)
    return taken


def describe(source: dict[str, object]) -> str:
    """One line naming the text source, for logs and the results table."""
    if source["kind"] == "hub":
        return f"Hugging Face Hub {source['dataset']} ({source['config']}, split {source['split']})"
    return f"local text {source['path']} ({source['files']} file(s), sha256 {str(source['sha256'])[:12]})"


def write_jsonl(path: Path, documents: list[str]) -> None:
    atomic_write_text(path, (json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in documents))


def prepare(out: Path, text: Text, heldout: float, valid_chars: int, seed: int) -> dict[str, object]:
    """Write the splits, the dataset registry and ``source.json``; returns the latter's content."""
    train_ids, test_ids = split_documents(len(text.documents), heldout, seed)
    splits = {
        "train": [text.documents[i] for i in train_ids],
        "test": [text.documents[i] for i in test_ids],
    }
    splits["valid"] = leading_documents(splits["test"], valid_chars)
    for name, documents in splits.items():
        write_jsonl(out / f"{name}.jsonl", documents)
    atomic_write_text(out / "dataset_info.json", json.dumps(DATASET_INFO, indent=2) + "\n")
    summary = {
        **text.source,
        "description": describe(text.source),
        "seed": seed,
        "documents": {name: len(documents) for name, documents in splits.items()},
        "characters": {name: sum(map(len, documents)) for name, documents in splits.items()},
    }
    atomic_write_text(out / "source.json", json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the jsonl splits and dataset_info.json")
    parser.add_argument("--text", type=Path, help="local text file or folder of .txt files (default: WikiText-2 "
                        "from the Hub)")
    parser.add_argument("--doc-chars", type=int, default=2000,
                        help="local text: characters of consecutive paragraphs per document at least (default 2000)")
    parser.add_argument("--heldout", type=float, default=0.1, help="share of documents held out (default 0.1)")
    parser.add_argument("--valid-chars", type=int, default=16000,
                        help="characters of held-out text scored during training (default 16000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out draw (default 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def action() -> None:
        if not 0 < args.heldout < 1:
            raise UserInputError(f"--heldout must be between 0 and 1, got {args.heldout}")
        if args.doc_chars < 1 or args.valid_chars < 1:
            raise UserInputError("--doc-chars and --valid-chars must be positive")
        text = local_text(args.text, args.doc_chars) if args.text is not None else hub_text()
        summary = prepare(args.out, text, args.heldout, args.valid_chars, args.seed)
        logger.info("text: %s", summary["description"])
        logger.info("documents: %s; characters: %s", summary["documents"], summary["characters"])

    return run_command(action)


if __name__ == "__main__":
    sys.exit(main())
