"""``report_to: wandb`` and ``report_to: tensorboard`` on a tiny ddm run, offline and without network; the
logged keys are read back from the W&B run file and the TensorBoard event file."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.commands import bare_environment
from tests.tracking import tensorboard_scalars, wandb_offline_history, without_network
from tests.training.conftest import TRAINING_DIR

from .conftest import FACTORY_ROOT, tiny_config

pytestmark = pytest.mark.slow

STEPS, EVERY = 6, 2


def test_a_ddm_run_logs_to_wandb_offline_and_to_tensorboard(tiny_models, datasets_cache, tmp_path):
    output, wandb_dir, home = tmp_path / "out", tmp_path / "wandb", tmp_path / "home"
    wandb_dir.mkdir()
    home.mkdir()
    config = tiny_config("gpt2_ddm.yaml", tiny_models, output, datasets_cache, max_steps=STEPS, logging_steps=EVERY,
                         save_steps=STEPS, do_eval=False, val_size=0, plot_loss=False,
                         report_to=["wandb", "tensorboard"], run_name="tiny-ddm")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    env = bare_environment(home, WANDB_MODE="offline", WANDB_DIR=str(wandb_dir), WANDB_PROJECT="tiny",
                           FORCE_TORCHRUN="0", OMP_NUM_THREADS="1")
    command = [*without_network(), sys.executable, "-m", "llamafactory.cli", "train", str(tmp_path / "run.yaml")]
    result = subprocess.run(command, cwd=FACTORY_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]

    run, history = wandb_offline_history(wandb_dir)
    logged = {row["train/global_step"]: row for row in history if "train/loss" in row}
    assert sorted(logged) == list(range(EVERY, STEPS + 1, EVERY))
    for row in logged.values():
        assert {"train/loss", "train/unweighted_loss", "train/anneal_ratio", "train/learning_rate"} <= set(row)
    assert [logged[s]["train/anneal_ratio"] for s in sorted(logged)] == pytest.approx([0.2, 0.4, 0.6])  # anneal 10
    assert "offline-run" in run.name and not list(home.rglob(".netrc"))  # no login, nothing to sync from

    scalars = tensorboard_scalars(output)
    for tag in ("train/loss", "train/unweighted_loss", "train/anneal_ratio", "train/learning_rate"):
        assert sorted(scalars[tag]) == list(range(EVERY, STEPS + 1, EVERY)), tag
    assert scalars["train/loss"][STEPS] == pytest.approx(logged[STEPS]["train/loss"], rel=1e-6)


def test_importing_the_commands_does_not_import_wandb(tmp_path):
    """wandb takes about a second to import: only a run that logs to it should pay for that."""
    probe = ("import sys, llamafactory.cli, llamafactory.train, diffullama_training.run; "
             "print(sorted(m for m in sys.modules if m == 'wandb' or m.startswith('wandb.')))")
    result = subprocess.run([sys.executable, "-c", probe], env=bare_environment(tmp_path), capture_output=True,
                            text=True, timeout=300, cwd=TRAINING_DIR)  # where train.py finds its package
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
