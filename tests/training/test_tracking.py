"""``train.py --wandb PROJECT`` offline and without network: the run file holds the logged keys at the logged
steps, as the JSON log does."""

from __future__ import annotations

import json
import sys

import pytest

from tests.commands import bare_environment
from tests.tracking import wandb_offline_history, without_network
from tests.training.conftest import SEQ_LENGTH, run_training

pytestmark = pytest.mark.slow

KEYS = ("loss", "unweighted_loss", "anneal_ratio", "lr", "tokens_per_s", "grad_norm")


def test_wandb_offline_run_holds_every_logged_key(base_model, packed_data, tmp_path):
    output, wandb_dir, home = tmp_path / "run", tmp_path / "wandb", tmp_path / "home"
    wandb_dir.mkdir()
    home.mkdir()
    env = bare_environment(home, WANDB_MODE="offline", WANDB_DIR=str(wandb_dir), OMP_NUM_THREADS="1")
    run_training(["--model", str(base_model), "--dataset", str(packed_data / "train"), "--output-dir", str(output),
                  "--seq-length", str(SEQ_LENGTH), "--batch-size", "2", "--gradient-accumulate-every", "1",
                  "--max-train-steps", "4", "--log-every", "2", "--anneal-steps", "4", "--mixed-precision", "no",
                  "--wandb", "Diffusion"],
                 launcher=[*without_network(), sys.executable], env=env)
    run, history = wandb_offline_history(wandb_dir)
    logged = {row["_step"]: row for row in history if "loss" in row}
    written = {record["step"]: record for record in map(json.loads, (output / "train_log.jsonl").read_text().splitlines())}
    assert sorted(logged) == sorted(written) == [2, 4]
    for step, row in logged.items():
        assert set(KEYS) <= set(row)
        assert all(row[key] == pytest.approx(written[step][key], rel=1e-6) for key in KEYS)
    assert [logged[2]["anneal_ratio"], logged[4]["anneal_ratio"]] == pytest.approx([0.5, 1.0])
    assert run.name.startswith("offline-run-") and not list(home.rglob(".netrc"))
