"""Writes that never leave a half-written file or folder under its final name.

Everything is written beside its target under a hidden staging name, flushed to disk and then renamed
into place (``os.replace`` is atomic within one filesystem). Staging files are created owner-only by
``tempfile`` (and by transformers' own writers); they get the permissions of a plain write under the
current umask before they appear. A full disk or an unwritable target met while writing becomes one
``UserInputError`` line (``storage_errors``) instead of a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import UserInputError

# Weight files of a saved model; an earlier save's files that a new one does not rewrite are stale.
MODEL_WEIGHT_PATTERNS = ("model*.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
                         "pytorch_model*.bin", "pytorch_model.bin.index.json")
# OS errors that mean "this storage cannot take the write", with the words the error line uses.
STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


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


def publish_files(staging: Path, target: Path, *, stale: Iterable[str] = (), last: str = "config.json") -> None:
    """Move the files of a fully written ``staging`` folder into the existing folder ``target``.

    For a model saved into a folder that also holds other things (checkpoints, logs), where the folder
    itself cannot be swapped: files matching the ``stale`` patterns that the new save does not replace
    (shards of an earlier save) are removed first, ``last`` (what marks a model as present) is removed
    before and moved after every other file, each move is atomic, and ``staging`` is removed at the end.
    """
    apply_default_permissions(staging)
    names = {item.name for item in staging.iterdir()}
    for pattern in stale:
        for old in target.glob(pattern):
            if old.name not in names and old.is_file():
                old.unlink()
    (target / last).unlink(missing_ok=True)
    for item in sorted(staging.iterdir(), key=lambda path: path.name == last):
        if item.is_dir():
            replace_directory(item, target / item.name)
        else:
            os.replace(item, target / item.name)
    shutil.rmtree(staging, ignore_errors=True)


def publish_model(staging: Path, target: Path) -> None:
    """``publish_files`` for a saved model: weight files of an earlier save that it does not rewrite go."""
    publish_files(staging, target, stale=MODEL_WEIGHT_PATTERNS)


def nearest_existing_folder(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (the folder a new ``path`` would be created in)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def check_writable_folder(path: str | os.PathLike, what: str) -> None:
    """Fail now, with one line, when ``path`` (a folder, or one still to be created) cannot be written.

    Probes by creating and removing a file, since permission bits say nothing for root or read-only mounts;
    a folder that does not exist yet is not created here.
    """
    folder = nearest_existing_folder(Path(path).absolute())
    if not folder.is_dir():
        raise UserInputError(f"{what} {path}: {folder} is a file, not a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = STORAGE_ERRNOS.get(error.errno, error.strerror or str(error))
        raise UserInputError(f"{what} {path} is not writable ({reason} in {folder})") from None


@contextlib.contextmanager
def storage_errors(what: str, *, kept: str = "") -> Iterator[None]:
    """Turn a full disk, exceeded quota or unwritable target met inside the block into one error line.

    ``what`` names what was being written; ``kept`` says what earlier work is still intact.
    """
    try:
        yield
    except OSError as error:
        reason = STORAGE_ERRNOS.get(error.errno)
        if reason is None:
            raise
        where = f" ({error.filename})" if error.filename else ""
        raise UserInputError(f"cannot write {what}: {reason}{where}" + (f"; {kept}" if kept else "")) from error
