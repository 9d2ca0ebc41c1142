"""Writes that never leave a half-written file or folder under its final name.

Everything is written beside its target under a hidden staging name, flushed to disk and then renamed
into place (``os.replace`` is atomic within one filesystem). Staging files are created owner-only by
``tempfile``; they get the permissions of a plain write under the current umask before they appear.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


def current_umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_default_permissions(path: Path) -> None:
    """Give a staged file or folder tree the permissions a plain write would have given it."""
    mask = current_umask()
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in paths:
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


def atomic_write_bytes(path: str | os.PathLike, chunks: bytes | Iterable[bytes]) -> Path:
    """Write ``chunks`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
                stream.write(chunk)
            stream.flush()
            os.fsync(stream.fileno())
        apply_default_permissions(Path(staging))
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike, text: str | Iterable[str]) -> Path:
    """``atomic_write_bytes`` for UTF-8 text given whole or as pieces (e.g. JSON lines)."""
    pieces = [text] if isinstance(text, str) else text
    return atomic_write_bytes(path, (piece.encode("utf-8") for piece in pieces))


def replace_directory(staging: Path, target: Path) -> None:
    """Move a fully written folder into place; an existing target is swapped out first, then removed."""
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(target, backup)
    os.replace(staging, target)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; on success it replaces ``target`` whole.

    On any exception the staging folder is removed and ``target`` (if it existed) is left untouched.
    """
    final = Path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield staging
        apply_default_permissions(staging)
        replace_directory(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
