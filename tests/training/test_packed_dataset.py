"""The TinyLlama packed format and the deterministic per-rank sample streams."""

from __future__ import annotations

import itertools
import os
import stat
import struct

import numpy as np
import pytest

from diffullama_training.packed_dataset import (
    MixedStream,
    PackedDataError,
    PackedSource,
    PackedWriter,
    mixed_stream,
    packed_files,
    parse_data_config,
    read_header,
    read_tokens,
    token_dtype,
)


def _independent_packed_file(path, tokens: np.ndarray, dtype_code: int) -> None:
    """The header as TinyLlama specifies it, written without the code under test."""
    with open(path, "wb") as handle:
        handle.write(b"LITPKDS")
        handle.write(struct.pack("<Q", 1))
        handle.write(struct.pack("<B", dtype_code))
        handle.write(struct.pack("<Q", len(tokens)))
        handle.write(tokens.tobytes())


def test_writer_then_reader_returns_every_token_in_order(tmp_path):
    documents = [list(range(i * 10, i * 10 + n)) for i, n in enumerate([5, 17, 3, 30, 10])]
    with PackedWriter(tmp_path, "train_x", chunk_size=16, sep_id=65000, dtype=np.uint16) as writer:
        for doc in documents:
            writer.add(doc)
    files = packed_files(tmp_path, "train_x")
    assert [f.name for f in files] == [f"train_x_{i:010d}.bin" for i in range(5)]
    stream = np.concatenate([read_tokens(f) for f in files])
    flat = [t for doc in documents for t in doc]
    assert stream[: len(flat)].tolist() == flat
    assert (stream[len(flat) :] == 65000).all() and len(stream) == 5 * 16  # tail filled with the separator
    assert read_header(files[0]).dtype == np.uint16 and read_header(files[0]).chunk_size == 16


def test_written_files_get_the_permissions_of_a_plain_write(tmp_path):
    previous = os.umask(0o022)
    try:
        with PackedWriter(tmp_path, "perm", chunk_size=8, sep_id=0) as writer:
            writer.add(list(range(20)))
    finally:
        os.umask(previous)
    assert {stat.S_IMODE(f.stat().st_mode) for f in packed_files(tmp_path, "perm")} == {0o644}


def test_reader_accepts_a_file_written_by_an_independent_implementation(tmp_path):
    tokens = np.arange(40, dtype=np.int32) * 1000  # int32 (code 4), values beyond uint16
    _independent_packed_file(tmp_path / "foreign_0.bin", tokens, dtype_code=4)
    assert read_header(tmp_path / "foreign_0.bin").dtype == np.int32
    assert read_tokens(tmp_path / "foreign_0.bin").tolist() == tokens.tolist()
    source = PackedSource([tmp_path / "foreign_0.bin"], sample_tokens=8, seed=0, shuffle=False)
    assert [source.sample(i).tolist() for i in range(5)] == [tokens[i * 8 : (i + 1) * 8].tolist() for i in range(5)]


def test_writer_output_matches_the_independent_layout_byte_for_byte(tmp_path):
    tokens = np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.uint16)
    with PackedWriter(tmp_path / "ours", "p", chunk_size=8, sep_id=0) as writer:
        writer.add(tokens)
    _independent_packed_file(tmp_path / "theirs.bin", tokens, dtype_code=8)
    assert (tmp_path / "ours" / "p_0000000000.bin").read_bytes() == (tmp_path / "theirs.bin").read_bytes()


@pytest.mark.parametrize(
    ("corruption", "message"),
    [
        (lambda raw: b"NOTPKDS" + raw[7:], "magic"),
        (lambda raw: raw[:7] + struct.pack("<Q", 2) + raw[15:], "version"),
        (lambda raw: raw[:15] + struct.pack("<B", 42) + raw[16:], "dtype code"),
        (lambda raw: raw[:-2], "truncated"),
        (lambda raw: raw[:10], "shorter than"),
    ],
)
def test_damaged_files_are_rejected_with_the_reason(tmp_path, corruption, message):
    _independent_packed_file(tmp_path / "good.bin", np.arange(8, dtype=np.uint16), dtype_code=8)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(corruption((tmp_path / "good.bin").read_bytes()))
    with pytest.raises(PackedDataError, match=message):
        read_tokens(bad)


def test_writer_refuses_ids_that_do_not_fit_the_dtype(tmp_path):
    writer = PackedWriter(tmp_path, "p", chunk_size=8, sep_id=2, dtype=np.uint16)
    with pytest.raises(PackedDataError, match="do not fit"):
        writer.add([1, 70000])
    assert token_dtype(32000) == np.uint16 and token_dtype(128256) == np.int32


def _numbered_files(tmp_path, prefix: str, n_files: int, chunk: int) -> list:
    """Files whose tokens count up globally, so every sample identifies where it came from."""
    with PackedWriter(tmp_path, prefix, chunk_size=chunk, sep_id=0, dtype=np.int32) as writer:
        writer.add(np.arange(n_files * chunk))
    return writer.files


def test_a_rank_stream_is_a_permutation_of_its_files_samples_per_epoch(tmp_path):
    files = _numbered_files(tmp_path, "d", n_files=6, chunk=20)
    source = PackedSource(files, sample_tokens=5, seed=3, buffer_files=4)
    epoch = [tuple(source.sample(i)) for i in range(len(source))]
    expected = {tuple(range(s, s + 5)) for s in range(0, 6 * 20, 5)}
    assert len(source) == 24 and set(epoch) == expected
    assert epoch != sorted(epoch)  # shuffled
    second = [tuple(source.sample(i)) for i in range(len(source), 2 * len(source))]
    assert set(second) == expected and second != epoch  # a new order every epoch


def test_ranks_read_disjoint_files(tmp_path):
    files = _numbered_files(tmp_path, "d", n_files=5, chunk=8)
    shards = [PackedSource(files, 4, seed=0, rank=r, world_size=2) for r in range(2)]
    seen = [{tuple(s.sample(i)) for i in range(len(s))} for s in shards]
    assert len(shards[0]) == len(shards[1]) == 4 and not seen[0] & seen[1]
    with pytest.raises(PackedDataError, match="every rank needs at least one file"):
        PackedSource(files[:1], 4, seed=0, rank=0, world_size=2)


def test_a_stream_started_midway_continues_the_uninterrupted_one(tmp_path):
    for prefix in ("a", "b"):
        _numbered_files(tmp_path, prefix, n_files=3, chunk=12)
    stream = mixed_stream(tmp_path, [("a", 0.3), ("b", 0.7)], sample_tokens=4, seed=11, buffer_files=2)
    full = [b.tolist() for b in itertools.islice(stream.iterate(0), 5000)]
    again = mixed_stream(tmp_path, [("a", 0.3), ("b", 0.7)], sample_tokens=4, seed=11, buffer_files=2)
    for start in (0, 7, 4096, 4100):
        assert [b.tolist() for b in itertools.islice(again.iterate(start), 50)] == full[start : start + 50]


def test_mixing_follows_the_weights(tmp_path):
    sources = []
    for prefix, fill in (("slim", 1), ("star", 2)):
        with PackedWriter(tmp_path, prefix, chunk_size=8, sep_id=fill, dtype=np.uint16) as writer:
            writer.add([fill] * 16)
        sources.append(PackedSource(writer.files, 4, seed=0))
    stream = MixedStream(sources, [0.693584, 0.306416], seed=5)
    picks = [int(b[0]) for b in itertools.islice(stream.iterate(), 20000)]
    share = picks.count(1) / len(picks)
    assert abs(share - 0.693584) < 0.015  # ~4.6 standard deviations
    other_rank = MixedStream(sources, [0.693584, 0.306416], seed=5, rank=1)
    assert [int(b[0]) for b in itertools.islice(other_rank.iterate(), 200)] != picks[:200]


def test_data_config_parsing():
    assert parse_data_config("train_slim:0.693584,train_star:0.306416") == [("train_slim", 0.693584),
                                                                           ("train_star", 0.306416)]
    for bad, message in (("train_slim", "PREFIX:WEIGHT"), ("a:x", "not a number"), ("a:0", "positive"),
                         ("a:1,a:2", "twice")):
        with pytest.raises(PackedDataError, match=message):
            parse_data_config(bad)


def test_samples_larger_than_a_chunk_are_rejected(tmp_path):
    files = _numbered_files(tmp_path, "d", n_files=1, chunk=8)
    with pytest.raises(PackedDataError, match="do not fit chunks of 8"):
        PackedSource(files, 9, seed=0)
