"""The three evaluation scripts end to end on tiny random models and the fixture data."""

from __future__ import annotations

import csv
import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from dlm_eval import TASKS, DataSource
from dlm_eval.cli import DIFFUGPT, DIFFULLAMA, LLM, main
from dlm_eval.runner import load_examples
from dlm_eval.sandbox import capabilities
from tests.commands import bare_environment
from tests.tolerance import assert_records_match

from .common import FIXTURES

REPO = Path(__file__).resolve().parents[2]
FAST = ["--data_dir", str(FIXTURES), "--limit", "3", "--code_timeout", "5", "--gsm8k_max_length", "48"]
DIFFUSION_FAST = ["--diffusion_steps", "4", "--gsm8k_steps", "4"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("family, checkpoint, extra", [
    (DIFFUGPT, "diffugpt", DIFFUSION_FAST), (DIFFULLAMA, "diffullama", DIFFUSION_FAST), (LLM, "gpt2", []),
])
def test_every_task_runs_and_writes_results(family, checkpoint, extra, random_checkpoints, tmp_path, capsys):
    output = tmp_path / "out"
    argv = ["--model_name", str(random_checkpoints[checkpoint]), "--tasks", ",".join(TASKS), "--output_dir",
            str(output), *FAST, *extra]
    assert main(family, argv) == 0
    results = json.loads((output / "results.json").read_text())
    assert list(results["tasks"]) == list(TASKS)
    assert results["engine"] == family.kind
    for name, entry in results["tasks"].items():
        assert entry["examples"] == 3
        assert all(0.0 <= value <= 1.0 for value in entry["metrics"].values())
        assert len(read_jsonl(output / f"{name}.jsonl")) == 3
    assert all(r["status"] in ("passed", "failed", "timeout") for r in read_jsonl(output / "humaneval.jsonl"))
    assert results["tasks"]["humaneval"]["settings"]["sandbox"] == capabilities().as_dict()
    printed = capsys.readouterr().out
    assert "| model | TriQA | SQuAD | Lamb. | Lamb.-OAI | HSwag |" in printed and results["table"] in printed


@pytest.mark.slow
def test_same_seed_reproduces_generations_at_any_batch_size(random_checkpoints, tmp_path):
    runs = {}
    for batch_size in (1, 8):
        output = tmp_path / f"bs{batch_size}"
        argv = ["--model_name", str(random_checkpoints["diffugpt"]), "--tasks", "rocstories,lambada,siqa",
                "--batch_size", str(batch_size), "--seed", "7", "--output_dir", str(output), *FAST, *DIFFUSION_FAST]
        assert main(DIFFUGPT, argv) == 0
        runs[batch_size] = {task: read_jsonl(output / f"{task}.jsonl") for task in ("rocstories", "lambada", "siqa")}
    assert_records_match(runs[1], runs[8])  # same predictions; scores equal up to summation order


def test_rocstories_defaults_to_the_papers_first_thousand(tmp_path):
    with (FIXTURES / "rocstories_cloze" / "cloze_test_val__spring2016.csv").open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    with (tmp_path / "cloze_test_val__spring2016.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([header] + [rows[i % 3] for i in range(1005)])
    source = DataSource(tmp_path)
    assert len(load_examples([TASKS["rocstories"]], source, None)["rocstories"]) == 1000
    assert len(load_examples([TASKS["rocstories"]], source, 2)["rocstories"]) == 2
    assert len(load_examples([TASKS["piqa"]], DataSource(FIXTURES), None)["piqa"]) == 3


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "hellaswag,mmlu"], "error: unknown task(s) mmlu; expected 'all' or names from: triviaqa"),
    (["--tasks", "piqa", "--data_dir", "."], "error: task piqa: none of valid.jsonl found under"),
    (["--tasks", "piqa", "--limit", "0"], "error: --limit must be >= 1, got 0"),
    (["--tasks", "piqa", "--topp_temp", "1.5"], "error: topp_temp must be in (0, 1], got 1.5"),
    (["--tasks", "piqa", "--threshold", "0"], "error: threshold must be in (0, 1], got 0.0"),
    (["--tasks", "piqa", "--block_length", "0"], "error: block_length must be >= 1, got 0"),
])
def test_bad_input_is_one_line_before_any_model_loads(argv, message, capsys):
    # The model path does not exist: reaching the model loader would give a different error.
    assert main(DIFFUGPT, ["--model_name", "/nonexistent/model", "--data_dir", str(FIXTURES), *argv]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(message) and "\n" not in error


def test_missing_checkpoint_is_one_line(capsys):
    assert main(DIFFUGPT, ["--model_name", "/nonexistent/model", "--data_dir", str(FIXTURES), "--tasks", "piqa"]) == 2
    assert capsys.readouterr().err.strip() == "error: checkpoint directory /nonexistent/model does not exist"


@pytest.mark.slow
def test_scripts_run_as_commands(random_checkpoints, tmp_path):
    script = REPO / "evaluation" / "eval-llm.py"
    command = [sys.executable, str(script), "--model_name", str(random_checkpoints["gpt2"]), "--tasks",
               "piqa,lambada", "--output_dir", str(tmp_path), *FAST]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300,
                               env=bare_environment(tmp_path))
    assert completed.returncode == 0, completed.stderr
    assert "| model | TriQA |" in completed.stdout
    assert set(json.loads((tmp_path / "results.json").read_text())["tasks"]) == {"piqa", "lambada"}


@pytest.mark.parametrize("script, description", [
    ("eval-diffugpt.py", "Evaluate a DiffuGPT checkpoint"), ("eval-diffullama.py", "Evaluate a DiffuLLaMA checkpoint"),
    ("eval-llm.py", "Evaluate an autoregressive baseline"),
])
def test_script_help(script, description, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(REPO / "evaluation" / script), run_name="__main__")
    assert exit_.value.code == 0
    assert description in capsys.readouterr().out
