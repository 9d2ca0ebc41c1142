"""The shared file helpers: UTF-8 checks with exact offsets, publishing a model into a folder that holds
other things, storage errors as one line."""

from __future__ import annotations

import errno
import gzip
import os

import pytest

from llamafactory.errors import UserInputError
from llamafactory.utils import encoding
from llamafactory.utils.files import check_writable_folder, publish_model, storage_errors

TEXT = "héllo\nwörld\n€uro\n".encode()


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 1 << 20])
@pytest.mark.parametrize(("data", "offset", "line"), [
    (TEXT + b"ab\xffz", len(TEXT) + 2, 4),  # a byte no UTF-8 sequence starts with
    (TEXT + "€".encode()[:2], len(TEXT), 4),  # a sequence cut off at the end of the file
    (b"\xc3(", 0, 1),
])
def test_the_first_invalid_byte_is_found_whatever_the_read_size(tmp_path, monkeypatch, chunk, data, offset, line):
    monkeypatch.setattr(encoding, "_CHUNK", chunk)
    (tmp_path / "f.txt").write_bytes(data)
    with pytest.raises(UserInputError, match=f"f.txt: byte {offset}, line {line}, is not valid UTF-8"):
        encoding.check_utf8(tmp_path / "f.txt")
    (tmp_path / "ok.txt").write_bytes(TEXT)
    encoding.check_utf8(tmp_path / "ok.txt")


def test_gzipped_files_count_decompressed_bytes(tmp_path):
    with gzip.open(tmp_path / "f.jsonl.gz", "wb") as handle:
        handle.write(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(UserInputError, match="byte 16 \\(decompressed\\), line 2"):
        encoding.check_utf8(tmp_path / "f.jsonl.gz")


def test_publishing_a_model_replaces_the_earlier_one_and_keeps_everything_else(tmp_path):
    target = tmp_path / "run"
    (target / "checkpoint-2").mkdir(parents=True)
    for name in ("config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                 "model.safetensors.index.json", "train_log.jsonl"):
        (target / name).write_text("old")
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)
    for name in ("config.json", "model.safetensors"):
        (staging / name).write_text("new")
    previous = os.umask(0o022)
    try:
        publish_model(staging, target)
    finally:
        os.umask(previous)
    assert sorted(p.name for p in target.iterdir()) == ["checkpoint-2", "config.json", "model.safetensors",
                                                        "train_log.jsonl"]
    assert (target / "config.json").read_text() == "new" and (target / "train_log.jsonl").read_text() == "old"
    assert (target / "model.safetensors").stat().st_mode & 0o777 == 0o644 and not staging.exists()


def test_storage_errors_become_one_line_and_others_pass_through(tmp_path):
    with pytest.raises(UserInputError, match="cannot write the model: no space left on the device \\(/x\\); kept"):
        with storage_errors("the model", kept="kept"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/x")
    with pytest.raises(OSError, match="Input/output error"), storage_errors("the model"):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    check_writable_folder(tmp_path / "not" / "yet" / "there", "--output-dir")
    assert not (tmp_path / "not").exists()  # probed in the nearest existing folder, nothing created
