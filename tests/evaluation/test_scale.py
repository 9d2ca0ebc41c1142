"""Evaluation at scale: N processes write what one writes, a killed run resumes to the same results, a
resume with other settings is refused, and lm-eval's data-parallel mode gives the one-process metrics."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dlm_eval.cli import DIFFUGPT, main
from dlm_eval.harness import harness_device
from llamafactory.utils.distributed import SINGLE_PROCESS, Launch
from tests.commands import bare_environment
from tests.tolerance import assert_records_match
from tests.training.conftest import free_port, torchrun

from .common import FIXTURES
from .test_harness import DOCS, REPO, task_dir  # noqa: F401  (the harness tests' local tasks)

EVAL_SCRIPT = REPO / "evaluation" / "eval-diffugpt.py"
THREE_TASKS = "lambada,piqa,rocstories"  # generation, multiple choice, infilling


def _eval_args(model: Path, output: Path, *extra: str) -> list[str]:
    return ["--model_name", str(model), "--data_dir", str(FIXTURES), "--diffusion_steps", "4", "--device", "cpu",
            "--output_dir", str(output), *extra]


def _records(output: Path, task: str) -> list[dict]:
    return [json.loads(line) for line in (output / f"{task}.jsonl").read_text().splitlines()]


def _metrics(output: Path) -> dict[str, dict[str, float]]:
    return {task: entry["metrics"] for task, entry in json.loads((output / "results.json").read_text())["tasks"].items()}


def _run(command: list[str], home: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                               env=bare_environment(home, OMP_NUM_THREADS="1"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


@pytest.mark.slow
def test_two_processes_write_the_records_of_one(random_checkpoints, tmp_path):
    model = random_checkpoints["diffugpt"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(DIFFUGPT, _eval_args(model, one, "--tasks", THREE_TASKS, "--limit", "3")) == 0
    _run([*torchrun(2), str(EVAL_SCRIPT), *_eval_args(model, two, "--tasks", THREE_TASKS, "--limit", "3",
                                                      "--save_every", "1")], tmp_path)
    for task in THREE_TASKS.split(","):
        assert_records_match(_records(two, task), _records(one, task))
    assert_records_match(_metrics(two), _metrics(one))
    entry = json.loads((two / "results.json").read_text())["tasks"]["lambada"]
    assert entry["processes"] == 2 and entry["speed"]["nfe_per_example"] > 0
    assert not (two / "partial").exists()


def _write_gsm8k(folder: Path, count: int) -> Path:
    """``count`` GSM8K-format questions (the answers do not matter to a random model)."""
    (folder / "gsm8k").mkdir(parents=True)
    rows = [{"question": f"Tom has {n} apples and buys {n + 2} more. How many apples now?",
             "answer": f"He has {n} + {n + 2} = {2 * n + 2} apples.\n#### {2 * n + 2}"} for n in range(count)]
    (folder / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def _gsm8k_args(model: Path, data: Path, output: Path, *extra: str) -> list[str]:
    return ["--model_name", str(model), "--data_dir", str(data), "--tasks", "gsm8k", "--gsm8k_max_length", "64",
            "--gsm8k_steps", "16", "--batch_size", "1", "--device", "cpu", "--output_dir", str(output), *extra]


@pytest.mark.slow
@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_run_resumes_to_the_results_of_an_uninterrupted_one(random_checkpoints, tmp_path, capsys, kill):
    model, data = random_checkpoints["diffugpt"], _write_gsm8k(tmp_path / "data", 12)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(DIFFUGPT, _gsm8k_args(model, data, whole)) == 0

    command = [sys.executable, str(EVAL_SCRIPT), *_gsm8k_args(model, data, killed, "--save_every", "1")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=bare_environment(tmp_path, OMP_NUM_THREADS="1"))
    saved = killed / "partial" / "gsm8k" / "rank0.jsonl"
    deadline = time.monotonic() + 120
    while not (saved.is_file() and len(saved.read_text().splitlines()) >= 3) and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.01)
    process.send_signal(kill)
    process.wait()
    assert not (killed / "gsm8k.jsonl").exists()
    finished = len(saved.read_text().splitlines())
    assert 3 <= finished < 12

    # The same run with other settings is refused before the model loads; nothing saved is touched.
    assert main(DIFFUGPT, _gsm8k_args(model, data, killed, "--gsm8k_steps", "8")) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: --output_dir {killed} holds an unfinished gsm8k run with other settings")
    assert "gsm8k_steps: 16 -> 8" in error
    assert len(saved.read_text().splitlines()) == finished

    assert main(DIFFUGPT, _gsm8k_args(model, data, killed)) == 0
    assert _records(killed, "gsm8k") == _records(whole, "gsm8k")  # greedy decisions: exactly equal
    assert _metrics(killed) == _metrics(whole)
    resumed = json.loads((killed / "results.json").read_text())["tasks"]["gsm8k"]["speed"]
    assert resumed["generated_tokens"] < json.loads((whole / "results.json").read_text())["tasks"]["gsm8k"][
        "speed"]["generated_tokens"]  # only the unfinished examples were generated again
    assert not (killed / "partial").exists()


def test_a_finished_task_is_skipped_and_no_resume_evaluates_it_again(random_checkpoints, tmp_path, caplog):
    model, output = random_checkpoints["diffugpt"], tmp_path / "out"
    args = _eval_args(model, output, "--tasks", "piqa", "--limit", "2")
    assert main(DIFFUGPT, args) == 0
    first = json.loads((output / "results.json").read_text())["tasks"]["piqa"]
    with caplog.at_level("INFO"):
        assert main(DIFFUGPT, args) == 0
    assert "piqa: already evaluated with these settings" in caplog.text
    assert json.loads((output / "results.json").read_text())["tasks"]["piqa"] == first
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(DIFFUGPT, [*args, "--no_resume"]) == 0
    assert "already evaluated" not in caplog.text and "piqa: accuracy=" in caplog.text
    assert json.loads((output / "results.json").read_text())["tasks"]["piqa"]["metrics"] == first["metrics"]


@pytest.mark.slow
def test_lm_eval_data_parallel_under_accelerate_gives_the_metrics_of_one_process(planted_diffugpt_dir, task_dir, tmp_path):  # noqa: F811
    tasks = ["planted_choice", "planted_word"]  # every process needs a document: 2 each
    assert all(len(DOCS[name.removeprefix("planted_")]) >= 2 for name in tasks)
    arguments = [str(REPO / "evaluation" / "lm_eval_diffllm.py"), "--model", "diffllm", "--model_args",
                 f"pretrained={planted_diffugpt_dir},diffusion_steps=4", "--tasks", ",".join(tasks),
                 "--include_path", str(task_dir)]  # no --device: lm-eval passes cuda:0, which must not crash
    metrics = {}
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
                  "--main_process_port", str(free_port())]
    for name, launcher in (("one", [sys.executable]), ("two", accelerate)):
        _run([*launcher, *arguments, "--output_path", str(tmp_path / name)], tmp_path)
        written = json.loads(next((tmp_path / name).rglob("results_*.json")).read_text())["results"]
        metrics[name] = {task: written[task]["acc,none"] for task in tasks}
    assert metrics["one"] == {"planted_choice": 1.0, "planted_word": 0.5}
    assert metrics["two"] == metrics["one"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the choice on a machine without CUDA")
def test_the_harness_and_the_launch_pick_devices_that_exist():
    assert harness_device("cuda:0", SINGLE_PROCESS) == torch.device("cpu")  # lm-eval's default on a CPU machine
    assert harness_device("cuda", SINGLE_PROCESS) == torch.device("cpu")
    assert harness_device(None, SINGLE_PROCESS) == torch.device("cpu")
    assert harness_device("cpu", Launch(rank=1, world_size=2, local_rank=1)) == torch.device("cpu")
    assert Launch(rank=3, world_size=4, local_rank=1).device(torch.device("cuda")) == torch.device("cuda", 1)
    assert Launch(rank=3, world_size=4, local_rank=1).device(torch.device("cuda", 0)) == torch.device("cuda", 0)
    assert SINGLE_PROCESS.device(torch.device("cuda")) == torch.device("cuda")
