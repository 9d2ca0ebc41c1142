"""The dataset registry: ``dataset_info.json`` in ``dataset_dir`` maps names to files or Hub ids.

An entry names its source (``file_name`` inside ``dataset_dir``, a file or folder; or ``hf_hub_url``) and
optionally which source columns play which role (``columns``). Pre-training reads one text column (role
``text``, or ``prompt`` as in the original registry); supervised stages read ``prompt`` and ``response``
(plus optional ``query`` appended to the prompt and ``system``). Without ``columns`` a dataset is read as
alpaca (``instruction`` / ``input`` / ``output``) for supervised stages and as ``text`` for pre-training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserInputError

REGISTRY_FILE = "dataset_info.json"
ROLES = ("text", "prompt", "query", "response", "system")
ENTRY_KEYS = ("file_name", "hf_hub_url", "columns", "subset", "split", "folder", "formatting")
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}


@dataclass(frozen=True)
class DatasetAttr:
    """One registered dataset: where it lives and which columns hold what."""

    name: str
    source: str  # "file" or "hub"
    path: str  # absolute file/folder path, or Hub id
    columns: dict[str, str] | None = None  # role -> source column; None = defaults
    subset: str | None = None
    split: str = "train"
    folder: str | None = None

    @property
    def has_text(self) -> bool:
        return self.columns is None or "text" in self.columns or "prompt" in self.columns

    @property
    def has_prompt_response(self) -> bool:
        return self.columns is None or ("prompt" in self.columns and "response" in self.columns)

    def text_column(self) -> str:
        """Source column with the raw text for pre-training."""
        if self.columns is None:
            return "text"
        return self.columns.get("text") or self.columns["prompt"]

    def supervised_columns(self) -> dict[str, str]:
        """Role -> source column for supervised stages (``prompt``, ``response``, optional ``query``, ``system``)."""
        columns = ALPACA_COLUMNS if self.columns is None else self.columns
        return {role: column for role, column in columns.items() if role in ("prompt", "query", "response", "system")}

    def describe(self) -> str:
        where = Path(self.path).name if self.source == "file" else self.path
        return f"dataset '{self.name}' ({where})"


def read_registry(dataset_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The parsed ``dataset_info.json`` of ``dataset_dir``."""
    path = Path(dataset_dir) / REGISTRY_FILE
    if not path.is_file():
        raise UserInputError(
            f"dataset registry {path} not found; set dataset_dir to a folder holding {REGISTRY_FILE}"
        )
    try:
        registry = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserInputError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(registry, dict):
        raise UserInputError(f"{path} must hold a JSON object mapping dataset names to entries")
    return registry


def _parse_entry(name: str, entry: Any, dataset_dir: Path) -> DatasetAttr:
    if not isinstance(entry, dict):
        raise UserInputError(f"dataset '{name}' in {REGISTRY_FILE} must be an object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        raise UserInputError(
            f"dataset '{name}' in {REGISTRY_FILE} has unsupported key(s) {', '.join(unknown)}; "
            f"expected some of {', '.join(ENTRY_KEYS)}"
        )
    formatting = entry.get("formatting", "alpaca")
    if formatting != "alpaca":
        raise UserInputError(f"dataset '{name}': formatting '{formatting}' is not supported (only alpaca)")
    columns = entry.get("columns")
    if columns is not None:
        bad = sorted(set(columns) - set(ROLES))
        if bad or not all(isinstance(v, str) for v in columns.values()):
            raise UserInputError(
                f"dataset '{name}': columns must map roles ({', '.join(ROLES)}) to column names; got {columns}"
            )
    if "file_name" in entry:
        source, path = "file", str(dataset_dir / entry["file_name"])
    elif "hf_hub_url" in entry:
        source, path = "hub", str(entry["hf_hub_url"])
    else:
        raise UserInputError(f"dataset '{name}' in {REGISTRY_FILE} needs file_name or hf_hub_url")
    return DatasetAttr(
        name=name, source=source, path=path, columns=dict(columns) if columns is not None else None,
        subset=entry.get("subset"), split=entry.get("split", "train"), folder=entry.get("folder"),
    )


def get_dataset_attrs(names: list[str], dataset_dir: str | Path) -> list[DatasetAttr]:
    """Registry entries for ``names``, failing on the first unknown name (listing the known ones)."""
    registry = read_registry(dataset_dir)
    attrs = []
    for name in names:
        if name not in registry:
            known = ", ".join(sorted(registry)) or "none"
            raise UserInputError(
                f"unknown dataset '{name}': not in {Path(dataset_dir) / REGISTRY_FILE} (registered: {known})"
            )
        attrs.append(_parse_entry(name, registry[name], Path(dataset_dir)))
    return attrs


SUPERVISED_STAGES = ("sft", "ddm-sft")


def check_datasets(names: list[str], dataset_dir: str | Path, stage: str) -> list[DatasetAttr]:
    """The registry entries for ``names``, each checked to exist locally (Hub sets are checked when loaded)
    and to have the columns ``stage`` reads: prompt and response for sft / ddm-sft, text otherwise."""
    attrs = get_dataset_attrs(names, dataset_dir)
    for attr in attrs:
        if attr.source == "file" and not Path(attr.path).exists():
            raise UserInputError(f"{attr.describe()}: file {attr.path} does not exist")
        if stage in SUPERVISED_STAGES and not attr.has_prompt_response:
            raise UserInputError(
                f"{attr.describe()} has no prompt/response columns ({attr.columns}); stage {stage} needs them"
            )
        if stage not in SUPERVISED_STAGES and not attr.has_text:
            raise UserInputError(f"{attr.describe()} has no text column ({attr.columns}); stage {stage} needs one")
    return attrs
