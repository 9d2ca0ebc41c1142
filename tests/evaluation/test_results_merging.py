"""Runs into one --output_dir add up per task; another model's results are never overwritten; an evaluation
file without examples or with bytes that are not UTF-8 is one error line naming it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from dlm_eval.cli import LLM, main

from .common import FIXTURES

FAST = ["--data_dir", str(FIXTURES), "--limit", "3"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tasks_of_later_runs_are_merged_and_another_model_is_refused(random_checkpoints, tmp_path, capsys):
    output = tmp_path / "out"
    model = str(random_checkpoints["gpt2"])
    assert main(LLM, ["--model_name", model, "--tasks", "piqa", "--output_dir", str(output), *FAST]) == 0
    piqa = json.loads((output / "results.json").read_text())["tasks"]["piqa"]
    piqa_records = _digest(output / "piqa.jsonl")

    assert main(LLM, ["--model_name", model, "--tasks", "lambada", "--output_dir", str(output), "--seed", "3",
                      *FAST]) == 0
    merged = json.loads((output / "results.json").read_text())
    assert list(merged["tasks"]) == ["piqa", "lambada"]
    assert merged["tasks"]["piqa"] == piqa and _digest(output / "piqa.jsonl") == piqa_records
    assert merged["tasks"]["piqa"]["config"]["seed"] == 0 and merged["tasks"]["lambada"]["config"]["seed"] == 3

    before = {path.name: _digest(path) for path in output.iterdir()}
    other = tmp_path / "other-model"
    shutil.copytree(random_checkpoints["gpt2"], other)
    assert main(LLM, ["--model_name", str(other), "--tasks", "piqa", "--output_dir", str(output), *FAST]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: --output_dir {output} holds the results of another model")
    assert {path.name: _digest(path) for path in output.iterdir()} == before


def test_an_evaluation_file_without_examples_or_with_bad_bytes_is_an_error(tmp_path, capsys):
    data = tmp_path / "data" / "lambada"
    data.mkdir(parents=True)
    text = data / "lambada_test_plain_text.txt"
    text.write_text("\n\n")
    argv = ["--model_name", "/nonexistent/model", "--tasks", "lambada", "--data_dir", str(tmp_path / "data"),
            "--output_dir", str(tmp_path / "out")]
    assert main(LLM, argv) == 2  # stops before the (missing) model is looked at
    assert capsys.readouterr().err.strip() == f"error: task lambada: no examples in {text}"
    text.write_bytes(b"a story that ends in a caf\xe9\n")
    assert main(LLM, argv) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: {text}: byte 26, line 1, is not valid UTF-8")
    assert not (tmp_path / "out").exists()
