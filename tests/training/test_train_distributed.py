"""End-to-end runs of train.py on CPU: two-process DDP, ZeRO-3 with resume, and DeepSpeed-Ulysses.

Each run trains a tiny LLaMA on tiny packed corpora for a few steps (about 20-30 s per launch).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

from llamafactory.ddm import load_diffusion_lm
from model import DiscreteDiffusionModel
from tests.training.conftest import (
    SEQ_LENGTH,
    TRAINING_DIR,
    accelerate_launch,
    run_training,
    torchrun,
    write_deepspeed_launch_config,
)

pytestmark = pytest.mark.slow


def _common(base_model: Path, packed_data: Path, output_dir: Path, steps: int, *extra: str) -> list[str]:
    return ["--model", str(base_model), "--dataset", str(packed_data / "train"), "--output-dir", str(output_dir),
            "--seq-length", str(SEQ_LENGTH), "--max-train-steps", str(steps), "--learning-rate", "3e-3",
            "--mixed-precision", "no", "--log-every", "1", *extra]


def _log(output_dir: Path) -> tuple[dict[int, dict], dict[int, float]]:
    """Training records and validation losses by step."""
    train, val = {}, {}
    for line in (output_dir / "train_log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "val_loss" in record:
            val[record["step"]] = record["val_loss"]
        else:
            train[record["step"]] = record
    return train, val


def _load_with_model_py(directory: Path) -> DiscreteDiffusionModel:
    """The final checkpoint, loaded the way the original quick start builds DiffuLLaMA."""
    config = AutoConfig.from_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = DiscreteDiffusionModel(model=LlamaForCausalLM.from_pretrained(directory), config=config,
                                   tokenizer=tokenizer, device="cpu")
    assert config.is_causal is False and config.task_specific_params["text-generation"]["max_length"] == SEQ_LENGTH
    assert model.mask_id == tokenizer.mask_token_id
    ids = torch.tensor([[tokenizer.bos_token_id] + [model.mask_id] * 7])
    assert torch.isfinite(model(ids)).all()
    return model


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


@pytest.fixture(scope="module")
def deepspeed_config(tmp_path_factory) -> Path:
    """The shipped ZeRO-3 JSON, launched on two CPU processes."""
    return write_deepspeed_launch_config(tmp_path_factory.mktemp("launch") / "zero3_cpu.yaml",
                                         TRAINING_DIR / "accelerate_configs" / "zero3.json")


def test_two_process_data_parallel_training_lowers_the_loss(base_model, packed_data, tmp_path):
    out = tmp_path / "ddp"
    run_training(_common(base_model, packed_data, out, 20, "--batch-size", "4", "--gradient-accumulate-every", "2",
                         "--anneal-steps", "10", "--save-every", "10", "--val-dataset", str(packed_data / "val"),
                         "--eval-every", "20", "--val-blocks", "16", "--eval-diffusion-steps", "4",
                         "--no-gradient-checkpointing"),
                 torchrun(2))
    train, val = _log(out)
    assert sorted(train) == list(range(1, 21))
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["unweighted_loss"]) for r in train.values())
    first = sum(train[s]["unweighted_loss"] for s in range(1, 6)) / 5
    last = sum(train[s]["unweighted_loss"] for s in range(16, 21)) / 5
    assert last < first - 0.3, (first, last)
    assert sorted(val) == [0, 20] and val[20] < val[0] - 0.5, val  # deterministic ELBO estimate on held-out text
    assert [train[s]["anneal_ratio"] for s in (1, 5, 10, 20)] == pytest.approx([0.1, 0.5, 1.0, 1.0])
    assert all(r["tokens_per_s"] > 0 for r in train.values())
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-20"]
    trained = _load_with_model_py(out)  # the final model is written into --output-dir, as the original did
    base = LlamaForCausalLM.from_pretrained(base_model)
    assert not torch.equal(trained.model.lm_head.weight, base.lm_head.weight)
    quickstart, _ = load_diffusion_lm(out)  # what inf_diffullama.py loads
    assert torch.equal(quickstart.model.lm_head.weight, trained.model.lm_head.weight)


def test_zero3_on_two_processes_resumes_to_the_same_trajectory(base_model, packed_data, deepspeed_config, tmp_path):
    args = ["--batch-size", "4", "--gradient-accumulate-every", "2", "--save-every", "3", "--keep-checkpoints", "2"]
    run_training(_common(base_model, packed_data, tmp_path / "full", 6, *args), accelerate_launch(deepspeed_config))
    state = json.loads((tmp_path / "full" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["global_batch_size"] == 16 and state["data_parallel_size"] == 2
    run_training(_common(base_model, packed_data, tmp_path / "resumed", 6, *args, "--resume",
                         str(tmp_path / "full" / "checkpoint-3")),
                 accelerate_launch(deepspeed_config))
    full, _ = _log(tmp_path / "full")
    resumed, _ = _log(tmp_path / "resumed")
    assert sorted(resumed) == [4, 5, 6]
    for step in (4, 5, 6):
        assert resumed[step]["loss"] == pytest.approx(full[step]["loss"], rel=1e-6)
        assert resumed[step]["unweighted_loss"] == pytest.approx(full[step]["unweighted_loss"], rel=1e-6)
        assert resumed[step]["grad_norm"] == pytest.approx(full[step]["grad_norm"], rel=1e-5)
    final, again = _weights(tmp_path / "full"), _weights(tmp_path / "resumed")
    assert final.keys() == again.keys()
    assert all(torch.allclose(final[k], again[k], atol=1e-6) for k in final)
    _load_with_model_py(tmp_path / "resumed")


def test_ulysses_sequence_parallelism_matches_single_process_training(base_model, packed_data, deepspeed_config,
                                                                      tmp_path):
    args = ["--batch-size", "2", "--gradient-accumulate-every", "2", "--save-every", "100", "--val-dataset",
            str(packed_data / "val"), "--eval-every", "3", "--val-blocks", "8", "--eval-diffusion-steps", "2"]
    run_training(_common(base_model, packed_data, tmp_path / "ulysses", 3, *args, "--parallel_mode", "ulysses_attn"),
                 accelerate_launch(deepspeed_config))
    run_training(_common(base_model, packed_data, tmp_path / "single", 3, *args))
    ulysses, ulysses_val = _log(tmp_path / "ulysses")
    single, single_val = _log(tmp_path / "single")
    assert sorted(ulysses) == sorted(single) == [1, 2, 3]
    assert sorted(ulysses_val) == [0, 3] and ulysses_val == pytest.approx(single_val, rel=1e-5)
    for step in (1, 2, 3):  # same samples, same noise, same updates: two shards of each sequence on two ranks
        assert ulysses[step]["loss"] == pytest.approx(single[step]["loss"], rel=1e-5)
        assert ulysses[step]["unweighted_loss"] == pytest.approx(single[step]["unweighted_loss"], rel=1e-5)
        assert ulysses[step]["grad_norm"] == pytest.approx(single[step]["grad_norm"], rel=1e-4)  # scale, not only direction

    other_batch = run_training(_common(base_model, packed_data, tmp_path / "single", 4, "--batch-size", "2",
                                       "--gradient-accumulate-every", "1", "--resume"),
                               expect_success=False)
    assert other_batch.returncode == 2
    assert "it was trained with gradient_accumulation=2, this run has 1" in other_batch.stderr
