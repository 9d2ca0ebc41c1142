"""Checks on text input files before they are parsed: UTF-8 throughout, and not empty.

Readers further down (``datasets``, ``json``) either fail with a traceback that names neither the file
nor the position, or decode bad bytes into garbage; these checks name both, in one line.
"""

from __future__ import annotations

import codecs
import gzip
import os
from pathlib import Path
from typing import IO

from ..errors import UserInputError

_CHUNK = 1 << 20


def open_bytes(path: Path) -> IO[bytes]:
    """A file's bytes, decompressed when its name ends in ``.gz``."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def check_utf8(path: str | os.PathLike) -> None:
    """Fail with the file, byte offset and line of the first byte sequence that is not UTF-8.

    For a ``.gz`` file the offset counts the decompressed bytes. Reads the file once, in 1 MiB pieces.
    """
    path = Path(path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 1
    with open_bytes(path) as handle:
        while True:
            chunk = handle.read(_CHUNK)
            pending = decoder.getstate()[0]
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                data = pending + chunk
                position = offset - len(pending) + error.start
                line = lines - pending.count(b"\n") + data[: error.start].count(b"\n")
                where = " (decompressed)" if path.suffix == ".gz" else ""
                raise UserInputError(
                    f"{path}: byte {position}{where}, line {line}, is not valid UTF-8 "
                    f"({data[error.start:error.start + 4]!r}); save the file as UTF-8"
                ) from None
            if not chunk:
                return
            offset += len(chunk)
            lines += chunk.count(b"\n")


def check_not_empty(path: str | os.PathLike) -> None:
    """An input file of zero bytes is an error naming it (readers would yield nothing, silently)."""
    if Path(path).stat().st_size == 0:
        raise UserInputError(f"{path} is empty")
