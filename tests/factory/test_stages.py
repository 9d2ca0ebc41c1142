"""End to end on the tiny example configs: ddm, ddm-sft (full and LoRA), pt, sft, eval, predict, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from llamafactory.ddm import generation_length, load_diffusion_lm
from llamafactory.errors import UserInputError
from llamafactory.train import run_exp

from .conftest import tiny_config

pytestmark = pytest.mark.slow


def _history(output: Path) -> list[dict]:
    return json.loads((output / "trainer_state.json").read_text())["log_history"]


def _results(output: Path, split: str) -> dict:
    return json.loads((output / f"{split}_results.json").read_text())


def _train_logs(output: Path) -> list[dict]:
    return [entry for entry in _history(output) if "loss" in entry]


def test_ddm_adaptation_learns_anneals_and_saves_a_loadable_checkpoint(ddm_run):
    logs = _train_logs(ddm_run)
    assert [entry["step"] for entry in logs] == [5, 10, 15, 20, 25, 30]
    ratios = [entry["anneal_ratio"] for entry in logs]
    assert ratios[0] == pytest.approx(5 / 10) and ratios == sorted(ratios) and ratios[-1] == 1.0
    assert logs[-1]["unweighted_loss"] < logs[0]["unweighted_loss"] - 0.3
    evaluation = _results(ddm_run, "eval")
    assert evaluation["eval_perplexity"] == pytest.approx(math.exp(evaluation["eval_loss"]))
    assert evaluation["eval_loss"] < math.log(1000)  # better than uniform over the tiny vocabulary
    assert {"training_loss.png", "training_unweighted_loss.png"} <= {p.name for p in ddm_run.iterdir()}
    model, _ = load_diffusion_lm(ddm_run)
    assert model.config.is_causal is False and generation_length(model.config) == 32
    from model import DiscreteDiffusionModel  # the root quick-start API

    ids = torch.tensor([[model.tokens.bos_id, model.mask_id, model.mask_id]])
    assert torch.equal(DiscreteDiffusionModel.from_pretrained(str(ddm_run))(ids), model(ids))


def test_ddm_sft_from_checkpoint_dir_trains_and_predicts(tiny_models, ddm_run, datasets_cache, tmp_path):
    output = tmp_path / "ddm-sft"
    run_exp(tiny_config("gpt2_ddm-sft.yaml", tiny_models, output, datasets_cache, checkpoint_dir=str(ddm_run),
                        max_steps=10))
    logs = _train_logs(output)
    assert logs and logs[-1]["step"] == 10 and logs[-1]["anneal_ratio"] == 1.0
    lines = (output / "generated_predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 8 and all(set(r) == {"predict", "label"} and "####" in r["label"] for r in records)
    metrics = _results(output, "predict")
    assert metrics["predict_samples"] == 8 and 0.0 <= metrics["predict_accuracy"] <= 1.0
    load_diffusion_lm(output)


def test_lora_ddm_sft_on_tiny_llama(tiny_models, datasets_cache, tmp_path):
    output = tmp_path / "lora"
    run_exp(tiny_config("llama_lora_ddm-sft.yaml", tiny_models, output, datasets_cache))
    adapter = json.loads((output / "adapter_config.json").read_text())
    assert adapter["modules_to_save"] == ["embed_tokens"] and adapter["r"] == 8
    logs = _train_logs(output)
    assert logs[-1]["unweighted_loss"] < logs[0]["unweighted_loss"]
    assert math.isfinite(_results(output, "eval")["eval_loss"])
    model, _ = load_diffusion_lm(tiny_models / "llama", adapters=[str(output)])
    assert model.config.is_causal is False


def test_streamed_ddm_trains_and_evaluates(tiny_models, datasets_cache, tmp_path):
    output = tmp_path / "streamed"
    run_exp(tiny_config("gpt2_ddm.yaml", tiny_models, output, datasets_cache, streaming=True, max_steps=4,
                        logging_steps=2, save_steps=4, val_size=4, plot_loss=False))
    assert [e["step"] for e in _train_logs(output)] == [2, 4]
    assert math.isfinite(_results(output, "eval")["eval_loss"])


def test_autoregressive_pt_and_sft(tiny_models, datasets_cache, tmp_path):
    run_exp(tiny_config("gpt2_pt.yaml", tiny_models, tmp_path / "pt", datasets_cache))
    assert math.isfinite(_results(tmp_path / "pt", "eval")["eval_perplexity"])
    logs = _train_logs(tmp_path / "pt")
    assert logs[-1]["loss"] < logs[0]["loss"]
    run_exp(tiny_config("gpt2_sft.yaml", tiny_models, tmp_path / "sft", datasets_cache, max_steps=10, max_new_tokens=8))
    records = [json.loads(line) for line in (tmp_path / "sft" / "generated_predictions.jsonl").read_text().splitlines()]
    assert len(records) == 8 and "predict_accuracy" in _results(tmp_path / "sft", "predict")


class StopAt(TrainerCallback):
    """Ends training after ``step`` (its checkpoint is saved first), like an interrupted job."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


def test_resume_continues_the_step_count_and_the_loss(tiny_models, datasets_cache, tmp_path):
    settings = {"max_steps": 10, "save_steps": 5, "logging_steps": 1, "anneal_steps": 4, "do_eval": False,
                "plot_loss": False, "val_size": 0}
    run_exp(tiny_config("gpt2_ddm.yaml", tiny_models, tmp_path / "whole", datasets_cache, **settings))
    interrupted = tmp_path / "interrupted"
    run_exp(tiny_config("gpt2_ddm.yaml", tiny_models, interrupted, datasets_cache, **settings), callbacks=[StopAt(5)])
    assert max(e["step"] for e in _history(interrupted)) == 5
    run_exp(tiny_config("gpt2_ddm.yaml", tiny_models, interrupted, datasets_cache, **settings,
                        resume_from_checkpoint=str(interrupted / "checkpoint-5")))
    whole = {e["step"]: e for e in _train_logs(tmp_path / "whole")}
    resumed = {e["step"]: e for e in _train_logs(interrupted)}
    assert sorted(resumed) == list(range(1, 11))
    for step in range(6, 11):
        assert resumed[step]["loss"] == pytest.approx(whole[step]["loss"], rel=1e-4)
        assert resumed[step]["anneal_ratio"] == whole[step]["anneal_ratio"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"overwrite_output_dir": False}, "output_dir .* is not empty \\(keep.txt\\)"),
        ({"overwrite_output_dir": True, "dataset": "no_such_set"}, "unknown dataset 'no_such_set'"),
        ({"overwrite_output_dir": True, "stage": "ppo"}, "unknown stage 'ppo'"),
        ({"overwrite_output_dir": True, "dataset": "missing_file"}, "file .*absent.json does not exist"),
        ({"overwrite_output_dir": True, "dataset": "wrong_column"}, "column 'body' \\(role text\\) not found"),
        ({"overwrite_output_dir": True, "checkpoint_dir": "no/such/checkpoint"}, "does not exist"),
    ],
)
def test_bad_input_fails_clearly_and_overwrites_nothing(tiny_models, datasets_cache, tmp_path, overrides, message):
    data = tmp_path / "data"
    data.mkdir()
    (data / "texts.json").write_text(json.dumps([{"text": "hello there"}]))
    (data / "dataset_info.json").write_text(json.dumps({
        "missing_file": {"file_name": "absent.json"},
        "wrong_column": {"file_name": "texts.json", "columns": {"text": "body"}},
        "no_such_set_either": {"file_name": "texts.json"},
    }))
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("earlier results")
    before = _snapshot(output)
    settings = {"dataset_dir": str(data), "dataset": "no_such_set_either", "val_size": 0, "do_eval": False}
    config = tiny_config("gpt2_ddm.yaml", tiny_models, output, datasets_cache, **{**settings, **overrides})
    with pytest.raises(UserInputError, match=message):
        run_exp(config)
    assert _snapshot(output) == before


def test_diffusion_weights_under_zero3_fail_before_loading(tiny_models, datasets_cache, tmp_path):
    """checkpoint_dir is copied into a built model; ZeRO-3 partitions the model while building it."""
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from .conftest import EXAMPLES

    config = tiny_config("gpt2_ddm.yaml", tiny_models, tmp_path / "out", datasets_cache, do_eval=False, val_size=0,
                         deepspeed=str(EXAMPLES / "deepspeed" / "ds_z3_config.json"),
                         checkpoint_dir=str(tiny_models / "gpt2"))
    try:
        with pytest.raises(UserInputError, match="checkpoint_dir .* cannot be loaded under DeepSpeed ZeRO-3"):
            run_exp(config)
    finally:
        unset_hf_deepspeed_config()
    assert not (tmp_path / "out").exists()
