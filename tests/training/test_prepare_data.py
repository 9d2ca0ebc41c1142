"""prepare_data.py: text files of several formats -> packed files holding BOS + tokens + EOS per document."""

from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffullama_training import prepare as prepare_data
from diffullama_training.packed_dataset import packed_files, read_header, read_tokens
from tests.tiny import corpus, tiny_gpt2


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, tokenizer):
    directory = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def inputs(tmp_path):
    """The same 60 documents spread over jsonl, gzipped jsonl, txt and parquet files (with a blank row)."""
    docs = corpus(60, seed=3)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs[:20])))
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as handle:
        handle.write("".join(json.dumps({"text": d}) + "\n" for d in docs[20:30]) + "\n")
    (tmp_path / "c.txt").write_text("\n".join(docs[30:45]) + "\n\n")
    pq.write_table(pa.table({"text": docs[45:]}), tmp_path / "d.parquet")
    files = [tmp_path / name for name in ("a.jsonl", "b.jsonl.gz", "c.txt", "d.parquet")]
    return files, docs


def _run(files, tokenizer_dir, out, *extra) -> int:
    return prepare_data.main(["--input", *map(str, files), "--tokenizer", str(tokenizer_dir), "--output-dir", str(out),
                              "--prefix", "train_web", "--chunk-size", "64", *extra])


def test_documents_are_packed_in_order_with_bos_and_eos(inputs, tokenizer, tokenizer_dir, tmp_path):
    files, docs = inputs
    assert _run(files, tokenizer_dir, tmp_path / "out", "--workers", "2") == 0
    written = packed_files(tmp_path / "out", "train_web")
    assert all(read_header(f).chunk_size == 64 and read_header(f).dtype == np.uint16 for f in written)
    stream = np.concatenate([read_tokens(f) for f in written]).tolist()
    expected = [t for d in docs for t in
                [tokenizer.bos_token_id, *tokenizer(d, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]]
    assert stream[: len(expected)] == expected
    assert set(stream[len(expected) :]) <= {tokenizer.eos_token_id} and len(stream) - len(expected) < 64


def test_output_does_not_depend_on_the_number_of_workers(inputs, tokenizer_dir, tmp_path):
    files, _ = inputs
    assert _run(files, tokenizer_dir, tmp_path / "one", "--workers", "1") == 0
    assert _run(files, tokenizer_dir, tmp_path / "three", "--workers", "3") == 0
    one, three = packed_files(tmp_path / "one"), packed_files(tmp_path / "three")
    assert [f.read_bytes() for f in one] == [f.read_bytes() for f in three]


def test_a_missing_column_is_a_one_line_error(inputs, tokenizer_dir, tmp_path, capsys):
    files, _ = inputs
    assert _run(files[:1], tokenizer_dir, tmp_path / "out", "--column", "body", "--workers", "1") == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and last_line.endswith("a.jsonl:1: no column 'body' (found: text, id)")


def test_existing_output_is_kept_unless_overwrite_is_given(inputs, tokenizer_dir, tmp_path, capsys):
    files, _ = inputs
    assert _run(files[:1], tokenizer_dir, tmp_path / "out", "--workers", "1") == 0
    before = [f.read_bytes() for f in packed_files(tmp_path / "out")]
    assert _run(files[2:3], tokenizer_dir, tmp_path / "out", "--workers", "1") == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert [f.read_bytes() for f in packed_files(tmp_path / "out")] == before
    assert _run(files[2:3], tokenizer_dir, tmp_path / "out", "--workers", "1", "--overwrite") == 0
    assert [f.read_bytes() for f in packed_files(tmp_path / "out")] != before


def test_unsupported_inputs_are_rejected_before_tokenizing(tmp_path, tokenizer_dir, capsys):
    (tmp_path / "notes.md").write_text("# hi\n")
    assert _run([tmp_path / "notes.md"], tokenizer_dir, tmp_path / "out") == 2
    assert "unsupported input type .md" in capsys.readouterr().err
    assert _run([tmp_path / "missing*.jsonl"], tokenizer_dir, tmp_path / "out") == 2
    assert "matches no file" in capsys.readouterr().err


def _checksums(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_failed_overwrite_keeps_the_existing_dataset(inputs, tokenizer_dir, tmp_path, capsys):
    files, docs = inputs
    out = tmp_path / "out"
    assert _run(files, tokenizer_dir, out, "--workers", "1") == 0
    before = _checksums(out)
    bad_byte = tmp_path / "z.jsonl"  # good records, then a byte that is not UTF-8 half-way through
    bad_byte.write_bytes(b"".join(json.dumps({"text": d}).encode() + b"\n" for d in docs[:5]) + b'{"text": "\xff"}\n')
    failures = {
        "no column 'body'": ["--column", "body"],
        f"{bad_byte}: byte {bad_byte.stat().st_size - 4}, line 6, is not valid UTF-8": [],
    }
    for message, extra in failures.items():
        inputs_now = files if extra else [*files, bad_byte]
        assert _run(inputs_now, tokenizer_dir, out, "--workers", "2", "--overwrite", *extra) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("error: ") and message in err
        assert _checksums(out) == before  # nothing deleted, nothing half-written, no staging left


def test_inputs_that_give_no_documents_are_errors_naming_the_file(inputs, tokenizer_dir, tmp_path, capsys):
    files, _ = inputs
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_text(json.dumps({"text": ""}) + "\n")
    assert _run([files[0], tmp_path / "empty.jsonl"], tokenizer_dir, tmp_path / "out") == 2
    assert capsys.readouterr().err.strip().endswith(f"error: {tmp_path / 'empty.jsonl'} is empty")
    assert _run([files[0], tmp_path / "blank.jsonl"], tokenizer_dir, tmp_path / "out", "--workers", "1") == 2
    assert f"{tmp_path / 'blank.jsonl'}: no documents" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not packed_files(tmp_path / "out")


def test_a_model_folder_without_tokenizer_files_is_refused(inputs, tmp_path, capsys):
    """transformers 5 builds an empty GPT-2 tokenizer for such a folder: every document would become id 0."""
    files, _ = inputs
    tiny_gpt2(400).save_pretrained(tmp_path / "gpt2")
    assert _run(files[:1], tmp_path / "gpt2", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: no usable tokenizer") and "its vocabulary has 1 token(s)" in err
    assert not (tmp_path / "out").exists()
