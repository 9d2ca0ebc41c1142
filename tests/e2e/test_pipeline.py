"""The shortened end-to-end run (``TINY_QUICK=1 bash examples/tiny/run.sh``): every stage trains through
the real ``llamafactory-cli``, its loss falls, and the run leaves a results table, loss plots, logs and a
bundled-layout model that samples without leftover mask tokens."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from llamafactory.ddm import SamplingConfig, detect_layout, load_diffusion_lm, sample
from tests.e2e.conftest import FACTORY

pytestmark = pytest.mark.slow

STAGES = ("pt", "sft", "ddm", "ddm-sft")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("tiny-pipeline")
    env = {**os.environ, "TINY_QUICK": "1", "TINY_WORK": str(work), "HF_DATASETS_CACHE": str(work / "datasets_cache")}
    result = subprocess.run(["bash", "examples/tiny/run.sh"], cwd=FACTORY, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def logged_losses(stage_dir: Path) -> list[float]:
    history = json.loads((stage_dir / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


@pytest.mark.parametrize("stage", STAGES)
def test_loss_falls_in_every_stage(quick_run, stage):
    losses = logged_losses(quick_run / stage)
    assert len(losses) >= 3
    assert losses[-1] < losses[0], f"{stage}: loss went {losses}"


def test_results_table_loss_plots_and_logs(quick_run):
    out = quick_run / "example_output"
    results = (out / "results.md").read_text()
    for row in ("| AR (pt) | greedy, prefix only |", "| diffusion (ddm) | T = 1 |", "| diffusion (ddm) | T = n tokens |",
                "| diffusion (ddm-sft) | T = n tokens |"):
        assert row in results
    scores = json.loads((out / "results.json").read_text())
    assert set(scores["AR (pt) | greedy, prefix only"]) == {"infill", "complete", "reverse"}
    assert all(0.0 <= value <= 100.0 for by_task in scores.values() for value in by_task.values())
    # Seeing both sides is what makes infilling possible: the short schedule already shows it (25 vs 12 on
    # 100 held-out records when written), while the AR model can only guess the middle from the prefix.
    assert scores["diffusion (ddm) | T = n tokens"]["infill"] >= scores["AR (pt) | greedy, prefix only"]["infill"] + 5
    for stage in STAGES:
        assert (out / f"loss_{stage}.png").read_bytes()[:4] == b"\x89PNG"
    log = (out / "pipeline.log").read_text()
    assert "\r" not in log and "=== export:" in log and "pipeline finished" in log


def test_exported_model_samples_without_mask_tokens(quick_run):
    folder = quick_run / "diffugpt-tiny"
    assert detect_layout(folder) == "hf" and (folder / "generation_config.json").exists()
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 10 * 2**20
    model, tokenizer = load_diffusion_lm(folder)
    prompt = tokenizer("the capital of", add_special_tokens=False)["input_ids"]
    ids = torch.full((2, 24), model.mask_id)
    ids[:, 0] = tokenizer.eos_token_id
    ids[1, 1 : 1 + len(prompt)] = torch.tensor(prompt)
    given = torch.zeros_like(ids, dtype=torch.bool)
    given[1, : 1 + len(prompt)] = True
    tokens = sample(model, ids, model.mask_id, SamplingConfig(steps=8), src_mask=given,
                    generator=torch.Generator().manual_seed(0)).tokens
    assert not (tokens == model.mask_id).any()
    assert tokens[1, 1 : 1 + len(prompt)].tolist() == prompt
