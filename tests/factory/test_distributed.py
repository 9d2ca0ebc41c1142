"""Two CPU processes (gloo) through ``FORCE_TORCHRUN=1 llamafactory-cli train``: DDP and DeepSpeed ZeRO-2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llamafactory.ddm import load_diffusion_lm

from .conftest import EXAMPLES, FACTORY_ROOT

pytestmark = pytest.mark.slow

STEPS = 5


def _train_two_processes(models: Path, output: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    overrides = [f"model_name_or_path={models / 'gpt2'}", f"output_dir={output}", f"cache_dir={cache}",
                 f"max_steps={STEPS}", f"save_steps={STEPS}", "logging_steps=1", "do_eval=false", "val_size=0",
                 "plot_loss=false", "per_device_train_batch_size=4", *extra]
    env = {**os.environ, "FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2", "OMP_NUM_THREADS": "1"}
    env.pop("LOCAL_RANK", None)
    command = [sys.executable, "-m", "llamafactory.cli", "train", str(EXAMPLES / "tiny" / "gpt2_ddm.yaml"), *overrides]
    return subprocess.run(command, cwd=FACTORY_ROOT, env=env, capture_output=True, text=True, timeout=400)


def _check_run(result: subprocess.CompletedProcess, output: Path) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS
    logged = [e for e in state["log_history"] if "loss" in e]
    assert len(logged) == STEPS and all("unweighted_loss" in e for e in logged)
    model, _ = load_diffusion_lm(output)
    assert model.config.is_causal is False
    assert (output / f"checkpoint-{STEPS}").is_dir()


def test_ddp_on_two_cpu_processes(tiny_models, datasets_cache, tmp_path):
    result = _train_two_processes(tiny_models, tmp_path / "ddp", datasets_cache)
    _check_run(result, tmp_path / "ddp")


def test_deepspeed_zero2_on_two_cpu_processes(tiny_models, datasets_cache, tmp_path):
    result = _train_two_processes(tiny_models, tmp_path / "zero2", datasets_cache,
                                  "deepspeed=examples/deepspeed/ds_z2_config.json")
    _check_run(result, tmp_path / "zero2")
    assert "DeepSpeed" in result.stdout + result.stderr
