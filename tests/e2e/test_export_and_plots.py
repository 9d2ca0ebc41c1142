"""Export of the bundled model in the DiffuGPT Hub layout, and the per-stage loss plots."""

from __future__ import annotations

import json

import pytest
import torch

from llamafactory.ddm import (
    DiffusionLM,
    detect_layout,
    load_diffusion_lm,
    resolve_special_tokens,
    save_diffusion_checkpoint,
)
from llamafactory.errors import UserInputError
from tests.e2e.conftest import pipeline_module


@pytest.fixture(scope="module")
def ddm_checkpoint(pipeline_tokenizer, tmp_path_factory):
    """A random tiny GPT-2 saved the way the ddm stage saves (hf layout, bidirectional), with its tokenizer."""
    model = pipeline_module("init_model").pipeline_gpt2(pipeline_tokenizer, 32, 2, 2, 64, seed=1).eval()
    folder = tmp_path_factory.mktemp("ddm")
    save_diffusion_checkpoint(model, folder, tokenizer=pipeline_tokenizer, generation_length=24)
    return folder, model


def test_export_writes_the_hf_native_format_that_loads_back_identically(ddm_checkpoint, pipeline_tokenizer, tmp_path):
    folder, model = ddm_checkpoint
    out = pipeline_module("export").export(folder, tmp_path / "diffugpt-tiny", length=48)
    assert detect_layout(out) == "hf" and json.loads((out / "config.json").read_text())["model_type"] == "diffugpt"
    assert json.loads((out / "config.json").read_text())["task_specific_params"]["text-generation"]["max_length"] == 48
    assert "assets/diffugpt-tiny" in (out / "README.md").read_text()
    loaded, tokenizer = load_diffusion_lm(out)
    assert loaded.mask_id == tokenizer.mask_token_id == pipeline_tokenizer.mask_token_id
    reference = DiffusionLM(model, resolve_special_tokens(pipeline_tokenizer, "gpt2", len(pipeline_tokenizer)))
    ids = torch.randint(0, len(pipeline_tokenizer), (2, 20), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded(ids), reference(ids))


def test_export_refuses_an_oversized_model_and_keeps_what_is_there(ddm_checkpoint, tmp_path, monkeypatch):
    export = pipeline_module("export")
    out = tmp_path / "bundled"
    out.mkdir()
    (out / "config.json").write_text("{}")
    monkeypatch.setattr(export, "MAX_BYTES", 1024)
    with pytest.raises(UserInputError, match="over the 0 MiB limit"):
        export.export(ddm_checkpoint[0], out, length=48)
    assert (out / "config.json").read_text() == "{}"


def test_export_rejects_a_length_beyond_the_position_table(ddm_checkpoint, tmp_path):
    with pytest.raises(UserInputError, match="more than the 64 the model covers"):
        pipeline_module("export").export(ddm_checkpoint[0], tmp_path / "out", length=65)


def test_loss_plot_from_the_trainer_state(tmp_path):
    plots = pipeline_module("plots")
    stage = tmp_path / "ddm"
    (stage / "checkpoint-20").mkdir(parents=True)
    log = [{"step": 10, "loss": 5.0}, {"step": 20, "loss": 3.5, "unweighted_loss": 2.0}, {"step": 20, "train_loss": 4.2}]
    (stage / "checkpoint-20" / "trainer_state.json").write_text(json.dumps({"log_history": log}))
    assert plots.loss_history(stage) == [(10, 5.0), (20, 3.5)]
    plots.main(["--stage", f"ddm={stage}", "--out", str(tmp_path / "plots")])
    assert (tmp_path / "plots" / "loss_ddm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_plot_of_an_unfinished_stage_says_so(tmp_path):
    with pytest.raises(UserInputError, match="holds no trainer_state.json"):
        pipeline_module("plots").loss_history(tmp_path)
