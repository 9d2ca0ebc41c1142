"""prepare_data.py: text files of several formats -> packed files holding BOS + tokens + EOS per document."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffullama_training import prepare as prepare_data
from diffullama_training.packed_dataset import packed_files, read_header, read_tokens
from tests.tiny import corpus


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
