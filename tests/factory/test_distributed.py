"""Two CPU processes (gloo) through ``FORCE_TORCHRUN=1 llamafactory-cli train``: DDP and DeepSpeed ZeRO-2 give
the losses and weights of one process that accumulates the same two micro-batches per step
(docs/design.md#noise-seeds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llamafactory.ddm import load_diffusion_lm
from tests.tolerance import AFTER_TRAINING

from .conftest import EXAMPLES, FACTORY_ROOT

pytestmark = pytest.mark.slow

STEPS = 5


@pytest.fixture(scope="module")
def dropout_free_gpt2(tiny_models, tmp_path_factory) -> Path:
    """The tiny GPT-2 without dropout, so that processes differ only in the data and noise they draw."""
    folder = tmp_path_factory.mktemp("gpt2-no-dropout")
    for source in (tiny_models / "gpt2").iterdir():
        (folder / source.name).write_bytes(source.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _train(model: Path, output: Path, cache: Path, processes: int, *extra: str) -> subprocess.CompletedProcess:
    """``processes`` ranks of 4 rows each and ``2 / processes`` accumulation steps: 8 rows per optimiser step."""
    overrides = [f"model_name_or_path={model}", f"output_dir={output}", f"cache_dir={cache}",
                 f"max_steps={STEPS}", f"save_steps={STEPS}", "logging_steps=1", "do_eval=false", "val_size=0",
                 "plot_loss=false", "per_device_train_batch_size=4", f"gradient_accumulation_steps={2 // processes}",
                 *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LOCAL_RANK", None)
    if processes > 1:
        env.update(FORCE_TORCHRUN="1", NPROC_PER_NODE=str(processes))
    command = [sys.executable, "-m", "llamafactory.cli", "train", str(EXAMPLES / "tiny" / "gpt2_ddm.yaml"), *overrides]
    result = subprocess.run(command, cwd=FACTORY_ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _losses(output: Path) -> list[float]:
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS
    logged = [e for e in state["log_history"] if "loss" in e]
    assert len(logged) == STEPS and all("unweighted_loss" in e for e in logged)
    return [e["loss"] for e in logged]


@pytest.fixture(scope="module")
def one_process(dropout_free_gpt2, datasets_cache, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("one-process")
    _train(dropout_free_gpt2, output, datasets_cache, 1)
    return output


def _check_matches_one_process(output: Path, reference: Path) -> None:
    losses, expected = _losses(output), _losses(reference)
    assert losses == pytest.approx(expected, **AFTER_TRAINING)
    model, _ = load_diffusion_lm(output)
    assert model.config.is_causal is False
    assert (output / f"checkpoint-{STEPS}").is_dir()
    weights, reference_weights = load_file(output / "model.safetensors"), load_file(reference / "model.safetensors")
    # DeepSpeed's save also writes the tied head; it must still be the embedding.
    head = weights.pop("lm_head.weight", None)
    assert head is None or torch.equal(head, weights["transformer.wte.weight"])
    assert weights.keys() == reference_weights.keys()
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, reference_weights[name], rtol=AFTER_TRAINING["rel"],
                                   atol=AFTER_TRAINING["abs"])


def test_ddp_on_two_cpu_processes_equals_one_process(dropout_free_gpt2, datasets_cache, one_process, tmp_path):
    _train(dropout_free_gpt2, tmp_path / "ddp", datasets_cache, 2)
    _check_matches_one_process(tmp_path / "ddp", one_process)


def test_deepspeed_zero2_on_two_cpu_processes_equals_one_process(dropout_free_gpt2, datasets_cache, one_process,
                                                                   tmp_path):
    result = _train(dropout_free_gpt2, tmp_path / "zero2", datasets_cache, 2,
                    "deepspeed=examples/deepspeed/ds_z2_config.json")
    assert "DeepSpeed" in result.stdout + result.stderr
    _check_matches_one_process(tmp_path / "zero2", one_process)
