"""The GPU check script parses its flags and, without CUDA, says so and exits cleanly (it is not run here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.commands import bare_environment

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=bare_environment(tmp_path))


def test_help_lists_the_checks(tmp_path):
    completed = _run(tmp_path, "--help")
    assert completed.returncode == 0, completed.stderr
    assert "flash_attention_2" in completed.stdout and "--quick" in completed.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the checks themselves")
def test_without_cuda_it_exits_cleanly_saying_so(tmp_path):
    completed = _run(tmp_path, "--quick")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "no CUDA device: this script checks the GPU paths and has nothing to do on a CPU"
