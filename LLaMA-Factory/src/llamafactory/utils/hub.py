"""Checkpoint names to local folders: a directory as it is, or a Hub id downloaded (weights as safetensors)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import UserInputError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Config, tokenizer and safetensors files only: pickled weights are never downloaded.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "tokenizer*"]


def resolve_checkpoint_dir(name_or_path: str | os.PathLike, *, revision: str | None = None) -> Path:
    """A local checkpoint directory: the path itself, or a Hub snapshot downloaded (safetensors only)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise UserInputError(f"{path} is a file; expected a checkpoint directory or a Hub model id")
    name = str(name_or_path)
    if not _HUB_ID.match(name) or name.startswith((".", "/", "~")):
        raise UserInputError(f"checkpoint directory {name} does not exist")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=_HUB_PATTERNS))
    except Exception as error:  # network, auth or not-found errors all mean: cannot use this name
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserInputError(
            f"{name} is neither a local directory nor a reachable Hub model ({type(error).__name__}: {reason})"
        ) from None
