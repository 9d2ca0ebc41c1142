"""Block diffusion in the stages ddm and ddm-sft (``block_size``, docs/design.md#block-diffusion): the loss
falls, saved models record and reload their block size and never look ahead, a block covering the row is the
full-sequence run, ddm-sft keeps its prompt clean, resume and two processes match, bad input fails early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM

from llamafactory.cli import main as cli
from llamafactory.ddm import load_diffusion_lm
from llamafactory.errors import UserInputError
from llamafactory.hparams import get_train_args
from llamafactory.train import run_exp
from llamafactory.train.ddm import trainer as stage_trainer
from llamafactory.train.preflight import check_run_inputs
from tests.tolerance import AFTER_TRAINING, assert_tensors_close

from .conftest import tiny_config
from .test_distributed import _losses, _train, dropout_free_gpt2  # noqa: F401  (fixture)
from .test_stages import StopAt

BLOCK = 8
QUICK = {"do_eval": False, "val_size": 0, "plot_loss": False}


def _train_logs(output: Path) -> list[dict]:
    return [e for e in json.loads((output / "trainer_state.json").read_text())["log_history"] if "loss" in e]


def _recorded(folder: Path) -> int | None:
    return json.loads((folder / "config.json").read_text()).get("block_size")


def _copy_model(source: Path, target: Path, **config_updates) -> Path:
    target.mkdir(parents=True)
    for item in source.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    config = json.loads((target / "config.json").read_text())
    config.update(config_updates)
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.fixture(scope="module")
def block_run(tiny_models, datasets_cache, tmp_path_factory) -> Path:
    """examples/tiny/gpt2_block_ddm.yaml (blocks of 8 over rows of 32, annealing over 10 steps), 20 steps."""
    output = tmp_path_factory.mktemp("runs") / "gpt2-block-ddm"
    run_exp(tiny_config("gpt2_block_ddm.yaml", tiny_models, output, datasets_cache, max_steps=20))
    return output


def _assert_never_looks_ahead(forward, ids: torch.Tensor) -> None:
    """Changing block 2 leaves the outputs of blocks 0 and 1 as they were; changing block 0 changes block 1's."""
    later, earlier = ids.clone(), ids.clone()
    later[:, 2 * BLOCK :] = (later[:, 2 * BLOCK :] + 7) % 300
    earlier[:, 1 : BLOCK] = (earlier[:, 1 : BLOCK] + 7) % 300
    with torch.no_grad():
        reference, changed_later, changed_earlier = forward(ids), forward(later), forward(earlier)
    assert_tensors_close(changed_later[:, : 2 * BLOCK], reference[:, : 2 * BLOCK])
    assert (changed_earlier[:, BLOCK : 2 * BLOCK] - reference[:, BLOCK : 2 * BLOCK]).abs().max() > 1e-4


@pytest.mark.slow
def test_block_ddm_on_gpt2_learns_and_saves_a_block_model(block_run, tmp_path):
    logs = _train_logs(block_run)
    assert logs[-1]["unweighted_loss"] < logs[0]["unweighted_loss"] - 0.3
    assert logs[0]["anneal_ratio"] == pytest.approx(5 / 10) and logs[-1]["anneal_ratio"] == 1.0
    assert _recorded(block_run) == BLOCK and _recorded(block_run / "checkpoint-10") == BLOCK
    assert json.loads((block_run / "eval_results.json").read_text())["eval_loss"] < 7.0
    model, _ = load_diffusion_lm(block_run)
    assert model.block_size == BLOCK
    ids = torch.randint(5, 300, (2, 3 * BLOCK), generator=torch.Generator().manual_seed(0))
    _assert_never_looks_ahead(model, ids)
    for flags in ([], ["--self-contained"]):
        export = tmp_path / f"export{len(flags)}"
        assert cli(["export", "--model_name_or_path", str(block_run), "--export_dir", str(export), *flags]) == 0
        assert _recorded(export) == BLOCK
    exported = AutoModelForMaskedLM.from_pretrained(tmp_path / "export0").eval()
    assert exported.config.block_size == BLOCK
    _assert_never_looks_ahead(lambda x: exported(input_ids=x).logits, ids)
    assert_tensors_close(exported(input_ids=ids).logits, model(ids))


@pytest.mark.slow
def test_block_ddm_on_tiny_llama_learns(tiny_models, datasets_cache, tmp_path):
    output = tmp_path / "llama"
    run_exp(tiny_config("gpt2_block_ddm.yaml", tiny_models, output, datasets_cache, **QUICK, max_steps=15,
                        model_name_or_path=str(tiny_models / "llama"), anneal_steps=5))
    logs = _train_logs(output)
    assert logs[-1]["unweighted_loss"] < logs[0]["unweighted_loss"]
    model, _ = load_diffusion_lm(output)
    assert model.block_size == BLOCK and _recorded(output) == BLOCK


@pytest.mark.slow
def test_a_block_covering_the_row_is_the_full_sequence_run(tiny_models, datasets_cache, tmp_path):
    settings = {**QUICK, "max_steps": 3, "logging_steps": 1, "save_steps": 100, "anneal_steps": 3}
    run_exp(tiny_config("gpt2_block_ddm.yaml", tiny_models, tmp_path / "row", datasets_cache, **settings,
                        block_size=32))
    run_exp(tiny_config("gpt2_block_ddm.yaml", tiny_models, tmp_path / "full", datasets_cache, **settings,
                        block_size=None))
    row, full = _train_logs(tmp_path / "row"), _train_logs(tmp_path / "full")
    assert [e["loss"] for e in row] == pytest.approx([e["loss"] for e in full], **AFTER_TRAINING)
    assert _recorded(tmp_path / "row") == 32 and _recorded(tmp_path / "full") is None


def test_ddm_sft_with_a_block_size_keeps_the_prompt_clean(tiny_models, datasets_cache, tmp_path, monkeypatch):
    calls: list[dict] = []
    real_loss = stage_trainer.training_loss

    def spy(model, input_ids, mask_id, **kwargs):
        seen = {"clean": input_ids, "mask_id": mask_id, **kwargs}
        handle = model.register_forward_pre_hook(lambda _, args, inputs: seen.update(model_ids=inputs["input_ids"]),
                                                 with_kwargs=True)
        try:
            result = real_loss(model, input_ids, mask_id, **kwargs)
        finally:
            handle.remove()
        calls.append(seen)
        return result

    monkeypatch.setattr(stage_trainer, "training_loss", spy)
    output = tmp_path / "sft"
    run_exp(tiny_config("gpt2_ddm-sft.yaml", tiny_models, output, datasets_cache, checkpoint_dir=None,
                        block_size=BLOCK, max_steps=2, do_predict=False, save_steps=100, **QUICK))
    assert len(calls) == 2 and _recorded(output) == BLOCK
    for seen in calls:
        clean, given = seen["clean"], seen["src_mask"]
        assert seen["block_size"] == BLOCK and seen["attention_mask"] is None  # PAD is a target, as without blocks
        noisy, second = seen["model_ids"][:, : clean.shape[1]], seen["model_ids"][:, clean.shape[1] :]
        assert torch.equal(second, clean)  # the clean half of [x_t ; x_0]
        assert torch.equal(noisy[given], clean[given])  # the prompt is never noised
        noised = noisy != clean
        assert noised.any() and bool((noisy[noised] == seen["mask_id"]).all()) and not noised[given].any()


@pytest.mark.slow
def test_block_resume_continues_exactly(tiny_models, datasets_cache, tmp_path):
    settings = {**QUICK, "max_steps": 6, "save_steps": 3, "logging_steps": 1, "anneal_steps": 4}
    run_exp(tiny_config("gpt2_block_ddm.yaml", tiny_models, tmp_path / "whole", datasets_cache, **settings))
    interrupted = tmp_path / "interrupted"
    run_exp(tiny_config("gpt2_block_ddm.yaml", tiny_models, interrupted, datasets_cache, **settings),
            callbacks=[StopAt(3)])
    assert _recorded(interrupted / "checkpoint-3") == BLOCK
    run_exp(tiny_config("gpt2_block_ddm.yaml", tiny_models, interrupted, datasets_cache, **settings,
                        resume_from_checkpoint=str(interrupted / "checkpoint-3")))
    whole = {e["step"]: e for e in _train_logs(tmp_path / "whole")}
    resumed = {e["step"]: e for e in _train_logs(interrupted)}
    assert sorted(resumed) == list(range(1, 7))
    for step in range(4, 7):
        assert resumed[step]["loss"] == pytest.approx(whole[step]["loss"], rel=1e-4)
        assert resumed[step]["anneal_ratio"] == whole[step]["anneal_ratio"]


@pytest.mark.slow
def test_block_ddm_on_two_processes_equals_one(dropout_free_gpt2, datasets_cache, tmp_path):  # noqa: F811
    _train(dropout_free_gpt2, tmp_path / "one", datasets_cache, 1, f"block_size={BLOCK}", "flash_attn=sdpa")
    _train(dropout_free_gpt2, tmp_path / "two", datasets_cache, 2, f"block_size={BLOCK}", "flash_attn=sdpa")
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), **AFTER_TRAINING)
    assert _recorded(tmp_path / "two") == BLOCK


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def block_model(tiny_models, tmp_path) -> Path:
    """The tiny GPT-2 with a config that records block_size 8 (a block model)."""
    return _copy_model(tiny_models / "gpt2", tmp_path / "block-model", block_size=BLOCK)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"block_size": 0}, "block_size must be an integer >= 1 .*got 0"),
        ({"block_size": 2.5}, "block_size must be an integer >= 1 .*got 2.5"),
        ({"block_size": "eight"}, "block_size must be .*got 'eight'"),
        ({"block_size": 8, "stage": "pt"}, "block_size 8 applies to the diffusion stages ddm and ddm-sft, not stage pt"),
        ({"block_size": 8, "flash_attn": "flash_attention_2", "anneal_steps": 1},
         "block diffusion needs an attention kernel that takes a 4D mask; attn_implementation 'flash_attention_2'"),
        ({"block_model": True, "block_size": 4}, "records block_size 8\\) but the run sets block_size 4: set block_size: 8"),
        ({"block_model": True, "block_size": None}, "records block_size 8\\) but the run sets block_size None"),
        ({"block_size": 8, "do_train": False}, "full-sequence diffusion model .*never trained with"),
    ],
)
def test_bad_block_input_fails_clearly_and_touches_nothing(tiny_models, block_model, datasets_cache, tmp_path,
                                                           monkeypatch, overrides, message):
    import transformers.utils

    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: True)  # reach the preflight
    overrides = dict(overrides)
    if overrides.pop("block_model", False):
        overrides["model_name_or_path"] = str(block_model)
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("earlier results")
    before, model_files = _snapshot(output), _snapshot(block_model)
    config = tiny_config("gpt2_block_ddm.yaml", tiny_models, output, datasets_cache, do_eval=True, **overrides)
    with pytest.raises(UserInputError, match=message):
        run_exp(config)
    assert _snapshot(output) == before and _snapshot(block_model) == model_files


def test_allow_block_size_change_lets_a_block_model_take_another_block_size(tiny_models, block_model, tmp_path):
    def preflight(**overrides) -> None:
        config = tiny_config("gpt2_block_ddm.yaml", tiny_models, tmp_path / "out", tmp_path / "cache",
                             model_name_or_path=str(block_model), **overrides)
        check_run_inputs(*get_train_args(config)[:4])

    with pytest.raises(UserInputError, match="records block_size 8"):
        preflight(block_size=16)
    preflight(block_size=16, allow_block_size_change=True)
    preflight(block_size=None, allow_block_size_change=True)
    preflight(block_size=BLOCK)


def test_a_lora_adapter_keeps_its_block_size_and_every_loader_reads_it(tiny_models, datasets_cache, tmp_path):
    output = tmp_path / "lora"
    run_exp(tiny_config("llama_lora_ddm-sft.yaml", tiny_models, output, datasets_cache, block_size=BLOCK, max_steps=2,
                        save_steps=1, save_total_limit=1, **QUICK))
    for folder in (output, output / "checkpoint-2"):
        assert json.loads((folder / "diffusion_config.json").read_text()) == {"block_size": BLOCK}
        assert not (folder / "config.json").exists()
    base = tiny_models / "llama"
    model, _ = load_diffusion_lm(base, adapters=[str(output)])
    assert model.block_size == BLOCK
    ids = torch.randint(5, 300, (2, 3 * BLOCK), generator=torch.Generator().manual_seed(0))
    _assert_never_looks_ahead(model, ids)
    assert load_diffusion_lm(base)[0].block_size is None  # the base model itself is untouched

    def preflight(**overrides) -> None:
        config = tiny_config("llama_lora_ddm-sft.yaml", tiny_models, tmp_path / "out", datasets_cache,
                             adapter_name_or_path=str(output), **overrides)
        check_run_inputs(*get_train_args(config)[:4])

    preflight(block_size=BLOCK)
    with pytest.raises(UserInputError, match="diffusion_config.json records block_size 8\\) but the run sets block_size None"):
        preflight(block_size=None)
