"""Where task data comes from: the published files under ``--data_dir``, else the Hub sets the paper used.

A local directory may hold each file in its own folder (``<data_dir>/piqa/valid.jsonl``, the layout
docs/data.md describes) or directly (``<data_dir>/valid.jsonl``). Every reader returns records in file order.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamafactory.errors import UserInputError
from llamafactory.utils.encoding import check_utf8


@dataclass(frozen=True)
class HubDataset:
    """A Hugging Face dataset split: ``load_dataset(name, config, split=split)``."""

    name: str
    split: str
    config: str | None = None

    def __str__(self) -> str:
        return f"{self.name}{f' ({self.config})' if self.config else ''}, split {self.split}"


class DataSource:
    """Finds a task's files in a local directory, or fetches its Hub split when no directory is given."""

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self.data_dir = Path(data_dir).expanduser() if data_dir is not None else None
        self.files: dict[str, Path] = {}  # task -> the local file it was read from
        if self.data_dir is not None and not self.data_dir.is_dir():
            raise UserInputError(f"--data_dir {self.data_dir} is not a directory")

    def find(self, folder: str, *names: str) -> Path | None:
        """The first of ``names`` present under ``<data_dir>/<folder>/`` or ``<data_dir>/``; None if none."""
        if self.data_dir is None:
            return None
        for name in names:
            for candidate in (self.data_dir / folder / name, self.data_dir / name):
                if candidate.is_file():
                    return candidate
        return None

    def require(self, task: str, folder: str, *names: str) -> Path:
        """Like :meth:`find`, but a missing file is a one-line error naming what was expected."""
        found = self.find(folder, *names)
        if found is None:
            where = self.data_dir if self.data_dir is not None else "--data_dir (not given)"
            raise UserInputError(
                f"task {task}: none of {', '.join(names)} found under {where} or its {folder}/ folder"
            )
        check_utf8(found)
        self.files[task] = found
        return found

    def resolve(self, task: str, folder: str, *names: str, hub: HubDataset | None = None) -> Path | None:
        """The local file to read, or None when the task should come from ``hub`` (no ``--data_dir``)."""
        if self.data_dir is None and hub is not None:
            return None
        return self.require(task, folder, *names)

    def hub_rows(self, task: str, hub: HubDataset) -> list[dict[str, Any]]:
        """All rows of a Hub split, as plain dicts; unreachable Hub -> a one-line error."""
        try:
            from datasets import load_dataset

            dataset = load_dataset(hub.name, hub.config, split=hub.split)
        except Exception as error:  # offline, gated, renamed or script-based sets all mean: not usable here
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserInputError(
                f"task {task}: could not load {hub} from the Hub ({reason}); pass --data_dir with the local files"
            ) from None
        return [dict(row) for row in dataset]


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file, without their line endings."""
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON Lines file, gzipped when its name ends in ``.gz``."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [_parse_json(path, number, line) for number, line in enumerate(handle, 1) if line.strip()]


def _parse_json(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise UserInputError(f"{path}:{number} is not valid JSON ({error.msg})") from None


def read_csv(path: Path) -> Iterator[dict[str, str]]:
    """Rows of a CSV file with a header, keyed by the header's column names."""
    with path.open(newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)


def require_fields(task: str, path: Path | str, number: int, record: dict[str, Any], fields: tuple[str, ...]) -> None:
    """A record lacking a field the format defines is a one-line error naming file, record and field."""
    missing = [name for name in fields if name not in record]
    if missing:
        raise UserInputError(f"task {task}: record {number} of {path} lacks field(s) {', '.join(missing)}")
