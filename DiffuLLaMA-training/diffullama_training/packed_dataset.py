"""TinyLlama packed token files: the format, a writer, and deterministic per-rank sample streams.

A packed file is a 24-byte header followed by one chunk of ``chunk_size`` tokens::

    b"LITPKDS"  uint64 version (1)  uint8 dtype code  uint64 chunk_size   (little-endian)

Documents are concatenated into chunks, separated by a separator token; the unused tail of the last
chunk is filled with it. Training reads fixed-size samples (``seq_length + 1`` tokens) out of chunks.

Every stream here is a pure function of ``(seed, rank, position)``: sample ``i`` of a rank is the same
whenever it is asked for, so a resumed run continues from a sample count instead of a saved iterator.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llamafactory.errors import UserInputError
from llamafactory.utils.files import atomic_write_bytes

HEADER_MAGIC = b"LITPKDS"
HEADER_VERSION = 1
HEADER_SIZE = 24
DTYPE_CODES: dict[int, np.dtype] = {
    1: np.dtype(np.uint8), 2: np.dtype(np.int8), 3: np.dtype(np.int16), 4: np.dtype(np.int32),
    5: np.dtype(np.int64), 6: np.dtype(np.float32), 7: np.dtype(np.float64), 8: np.dtype(np.uint16),
}
_HEADER = struct.Struct("<7sQBQ")
_MIX_PAGE = 4096  # mixture choices are drawn in pages of this many samples, one seeded draw per page


class PackedDataError(UserInputError):
    """A packed file, directory or data configuration cannot be used as given."""


@dataclass(frozen=True)
class PackedHeader:
    dtype: np.dtype
    chunk_size: int


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest TinyLlama dtype for a vocabulary: uint16 below 65,500 ids, int32 above."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


def _dtype_code(dtype: np.dtype) -> int:
    for code, known in DTYPE_CODES.items():
        if known == dtype:
            return code
    raise PackedDataError(f"dtype {dtype} has no packed-format code; use one of {sorted(map(str, DTYPE_CODES.values()))}")


def read_header(path: str | os.PathLike) -> PackedHeader:
    """Parse and validate a packed file's header."""
    with open(path, "rb") as handle:
        raw = handle.read(HEADER_SIZE)
    if len(raw) < HEADER_SIZE:
        raise PackedDataError(f"{path}: {len(raw)} bytes, shorter than the {HEADER_SIZE}-byte packed header")
    magic, version, code, chunk_size = _HEADER.unpack(raw)
    if magic != HEADER_MAGIC:
        raise PackedDataError(f"{path}: starts with {magic!r}, expected the packed-file magic {HEADER_MAGIC!r}")
    if version != HEADER_VERSION:
        raise PackedDataError(f"{path}: packed-format version {version}, expected {HEADER_VERSION}")
    if code not in DTYPE_CODES:
        raise PackedDataError(f"{path}: unknown dtype code {code}, expected one of {sorted(DTYPE_CODES)}")
    if chunk_size < 1:
        raise PackedDataError(f"{path}: chunk size {chunk_size}, expected at least 1")
    return PackedHeader(DTYPE_CODES[code], chunk_size)


def read_tokens(path: str | os.PathLike) -> np.ndarray:
    """The token array of a packed file, memory-mapped read-only (``[chunk_size]``)."""
    header = read_header(path)
    expected = HEADER_SIZE + header.chunk_size * header.dtype.itemsize
    actual = os.path.getsize(path)
    if actual != expected:
        raise PackedDataError(
            f"{path}: {actual} bytes, expected {expected} (header + {header.chunk_size} {header.dtype} tokens); "
            "the file is truncated or was written by another tool"
        )
    return np.memmap(path, dtype=header.dtype, mode="r", offset=HEADER_SIZE, shape=(header.chunk_size,))


class PackedWriter:
    """Appends documents to ``{prefix}_{index:010d}.bin`` chunk files, each written atomically.

    ``sep_id`` separates documents and fills the tail of the last chunk. Use as a context manager, or
    call ``close()`` to write the final partial chunk.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        prefix: str,
        chunk_size: int,
        sep_id: int,
        dtype: np.dtype | str = np.uint16,
        first_index: int = 0,
    ) -> None:
        if chunk_size < 1:
            raise PackedDataError(f"chunk_size must be at least 1, got {chunk_size}")
        self.dtype = np.dtype(dtype)
        if self.dtype.kind not in "iu":
            raise PackedDataError(f"token files need an integer dtype, got {self.dtype}")
        _dtype_code(self.dtype)
        if not _fits(self.dtype, sep_id):
            raise PackedDataError(f"separator id {sep_id} does not fit dtype {self.dtype}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.chunk_size = chunk_size
        self.sep_id = sep_id
        self.files: list[Path] = []
        self._index = first_index
        self._chunk = np.full(chunk_size, sep_id, dtype=self.dtype)
        self._filled = 0

    def add(self, tokens: Sequence[int] | np.ndarray) -> None:
        """Append one document's token ids (the caller adds BOS/EOS as wanted)."""
        array = np.asarray(tokens)
        if array.size and not (_fits(self.dtype, int(array.min())) and _fits(self.dtype, int(array.max()))):
            raise PackedDataError(f"token ids {int(array.min())}..{int(array.max())} do not fit dtype {self.dtype}")
        array = array.astype(self.dtype, copy=False)
        while array.size:
            take = min(self.chunk_size - self._filled, array.size)
            self._chunk[self._filled : self._filled + take] = array[:take]
            self._filled += take
            array = array[take:]
            if self._filled == self.chunk_size:
                self._flush()

    def close(self) -> list[Path]:
        """Write the last, partly filled chunk (if any); returns every file written."""
        if self._filled:
            self._flush()
        return list(self.files)

    def __enter__(self) -> PackedWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            self.close()

    def _flush(self) -> None:
        target = self.out_dir / f"{self.prefix}_{self._index:010d}.bin"
        header = _HEADER.pack(HEADER_MAGIC, HEADER_VERSION, _dtype_code(self.dtype), self.chunk_size)
        atomic_write_bytes(target, [header, self._chunk.tobytes(order="C")])
        self.files.append(target)
        self._index += 1
        self._chunk.fill(self.sep_id)
        self._filled = 0


def _fits(dtype: np.dtype, value: int) -> bool:
    info = np.iinfo(dtype)
    return info.min <= value <= info.max


def packed_files(directory: str | os.PathLike, prefix: str = "") -> list[Path]:
    """Sorted packed files in ``directory`` whose names start with ``prefix`` (``*.bin``)."""
    root = Path(directory)
    if not root.is_dir():
        raise PackedDataError(f"data directory {root} does not exist")
    return sorted(p for p in root.glob(f"{prefix}*.bin") if p.is_file() and not p.name.startswith("."))


def check_token_ids(path: Path, tokens: np.ndarray, vocab_size: int) -> None:
    """Every id of a packed file must index the model's embedding (checked once per file, when first read)."""
    if not tokens.size or (int(tokens.min()) >= 0 and int(tokens.max()) < vocab_size):
        return
    bad = np.flatnonzero((tokens < 0) | (tokens >= vocab_size))
    raise PackedDataError(
        f"{path}: token id {int(tokens[bad[0]])} at position {int(bad[0])} (and {bad.size - 1} more) is outside "
        f"the model's vocabulary of {vocab_size}; the data were tokenized for another model"
    )


class PackedSource:
    """One rank's share of the samples of some packed files, in a seeded order repeated by epochs.

    Files are dealt to ranks round-robin (a tail that cannot be split evenly is left out). In each
    epoch the rank's files are shuffled and read ``buffer_files`` at a time; the samples of those files
    are shuffled together, as TinyLlama's buffer does. ``sample(i)`` is O(1) apart from one cached
    permutation per buffer, so a stream can start at any position.
    """

    def __init__(
        self,
        files: Sequence[Path],
        sample_tokens: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        buffer_files: int = 8,
        shuffle: bool = True,
        name: str = "data",
        vocab_size: int | None = None,
    ) -> None:
        if sample_tokens < 2:
            raise PackedDataError(f"a sample must hold at least 2 tokens, got {sample_tokens}")
        usable = len(files) // world_size * world_size
        if usable == 0:
            raise PackedDataError(
                f"{name}: {len(files)} packed files for {world_size} data-parallel ranks; every rank needs at "
                "least one file (write smaller chunks with prepare_data.py --chunk-size)"
            )
        self.files = list(files[:usable])[rank::world_size]
        headers = [read_header(f) for f in self.files]
        sizes = {(h.dtype, h.chunk_size) for h in headers}
        if len(sizes) > 1:
            raise PackedDataError(f"{name}: files mix dtypes/chunk sizes {sorted(map(str, sizes))}; expected one")
        self.chunk_size = headers[0].chunk_size
        if sample_tokens > self.chunk_size:
            raise PackedDataError(
                f"{name}: samples of {sample_tokens} tokens do not fit chunks of {self.chunk_size}; "
                "re-pack with --chunk-size a multiple of seq_length + 1"
            )
        self.sample_tokens = sample_tokens
        self.seed, self.rank, self.shuffle = seed, rank, shuffle
        self.vocab_size = vocab_size
        self.samples_per_file = self.chunk_size // sample_tokens
        self.buffer_files = max(1, min(buffer_files, len(self.files)))
        self._cached_key: tuple[int, int] | None = None
        self._cached_order: np.ndarray = np.empty(0, dtype=np.int64)
        self._mmaps: dict[Path, np.ndarray] = {}

    def __len__(self) -> int:
        """Blocks per epoch."""
        return len(self.files) * self.samples_per_file

    def sample(self, index: int) -> np.ndarray:
        """Sample ``index`` of this rank's endless stream, as int64 ``[sample_tokens]``."""
        epoch, offset = divmod(index, len(self))
        buffer_samples = self.buffer_files * self.samples_per_file
        buffer, position = divmod(offset, buffer_samples)
        order = self._buffer_order(epoch, buffer)
        file_slot, sample_in_file = divmod(int(order[position]), self.samples_per_file)
        path = self._file_order(epoch)[buffer * self.buffer_files + file_slot]
        tokens = self._tokens(path)
        start = sample_in_file * self.sample_tokens
        return np.asarray(tokens[start : start + self.sample_tokens], dtype=np.int64)

    def _file_order(self, epoch: int) -> list[Path]:
        if not self.shuffle:
            return self.files
        permutation = np.random.default_rng([self.seed, self.rank, epoch]).permutation(len(self.files))
        return [self.files[i] for i in permutation]

    def _buffer_order(self, epoch: int, buffer: int) -> np.ndarray:
        if self._cached_key != (epoch, buffer):
            n_files = min(self.buffer_files, len(self.files) - buffer * self.buffer_files)
            count = n_files * self.samples_per_file
            if self.shuffle:
                self._cached_order = np.random.default_rng([self.seed, self.rank, epoch, buffer, 1]).permutation(count)
            else:
                self._cached_order = np.arange(count)
            self._cached_key = (epoch, buffer)
        return self._cached_order

    def _tokens(self, path: Path) -> np.ndarray:
        if path not in self._mmaps:
            tokens = read_tokens(path)
            if self.vocab_size is not None:
                check_token_ids(path, tokens, self.vocab_size)
            self._mmaps[path] = tokens
        return self._mmaps[path]


class MixedStream:
    """Endless stream of samples, each drawn from one of several sources with fixed probabilities.

    The source of sample ``i`` comes from a seeded draw for its page of ``4096`` samples, so the stream
    can be started at any sample index: the position inside each source is the count of earlier
    samples that chose it.
    """

    def __init__(self, sources: Sequence[PackedSource], weights: Sequence[float], *, seed: int, rank: int = 0) -> None:
        if len(sources) != len(weights) or not sources:
            raise PackedDataError(f"{len(sources)} sources but {len(weights)} weights")
        total = float(sum(weights))
        self.sources = list(sources)
        self.cumulative = np.cumsum(np.asarray(weights, dtype=np.float64) / total)
        self.cumulative[-1] = 1.0
        self.seed, self.rank = seed, rank

    def choices(self, page: int) -> np.ndarray:
        """Source index of each sample in page ``page`` (``[4096]`` ints)."""
        uniform = np.random.default_rng([self.seed, self.rank, page, 2]).random(_MIX_PAGE)
        return np.searchsorted(self.cumulative, uniform, side="right")

    def iterate(self, start: int = 0) -> Iterator[np.ndarray]:
        """Blocks from sample ``start`` on."""
        first_page, skip = divmod(start, _MIX_PAGE)
        positions = np.zeros(len(self.sources), dtype=np.int64)
        for page in range(first_page):
            positions += np.bincount(self.choices(page), minlength=len(self.sources))
        page = first_page
        while True:
            picks = self.choices(page)
            positions += np.bincount(picks[:skip], minlength=len(self.sources))
            for source in picks[skip:]:
                yield self.sources[source].sample(int(positions[source]))
                positions[source] += 1
            page, skip = page + 1, 0


def parse_data_config(text: str) -> list[tuple[str, float]]:
    """``"prefix:weight,prefix:weight"`` -> ``[(prefix, weight)]``, validated."""
    entries = []
    for item in (part.strip() for part in text.split(",")):
        prefix, sep, weight_text = item.rpartition(":")
        if not sep or not prefix:
            raise PackedDataError(f"data config entry {item!r}: expected PREFIX:WEIGHT (e.g. train_slim:0.7)")
        try:
            weight = float(weight_text)
        except ValueError:
            raise PackedDataError(f"data config entry {item!r}: weight {weight_text!r} is not a number") from None
        if not math.isfinite(weight) or weight <= 0:
            raise PackedDataError(f"data config entry {item!r}: weight must be a positive number")
        entries.append((prefix, weight))
    prefixes = [p for p, _ in entries]
    if len(set(prefixes)) != len(prefixes):
        raise PackedDataError(f"data config {text!r} names a prefix twice")
    return entries


def mixed_stream(
    directory: str | os.PathLike,
    config: Iterable[tuple[str, float]],
    sample_tokens: int,
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    buffer_files: int = 8,
    vocab_size: int | None = None,
) -> MixedStream:
    """The training stream of one data-parallel rank over ``prefix*.bin`` files in ``directory``; with
    ``vocab_size`` each file's ids are checked against it when the file is first read."""
    sources, weights = [], []
    for prefix, weight in config:
        files = packed_files(directory, prefix)
        if not files:
            raise PackedDataError(f"no packed files {prefix}*.bin in {directory} (from the data config)")
        sources.append(
            PackedSource(files, sample_tokens, seed=seed, rank=rank, world_size=world_size,
                         buffer_files=buffer_files, name=f"{directory}/{prefix}*", vocab_size=vocab_size)
        )
        weights.append(weight)
    return MixedStream(sources, weights, seed=seed, rank=rank)
