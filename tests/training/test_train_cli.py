"""train.py refuses unusable settings with one-line errors before starting any process group; its settings
are one frozen, validated TrainSettings built from the command line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from diffullama_training import run
from diffullama_training.settings import TrainSettings, settings_from_args
from llamafactory.errors import UserInputError


def _argv(base_model, packed_data, *extra) -> list[str]:
    return ["--model", str(base_model), "--dataset", str(packed_data / "train"), "--output-dir", "unused",
            "--seq-length", "15", *extra]


def test_an_unusable_output_dir_is_refused_before_anything_starts(base_model, packed_data, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    argv = _argv(base_model, packed_data)
    argv[argv.index("--output-dir") + 1] = str(tmp_path / "a_file" / "run")
    assert run.main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --output-dir {tmp_path / 'a_file' / 'run'}: {tmp_path / 'a_file'} is a file, not a folder")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data-config", "train_slim:0.5,train_code:0.5"], "holds no train_code*.bin files (from --data-config)"),
        (["--data-config", "train_slim"], "expected PREFIX:WEIGHT"),
        (["--attn-implementation", "flash_attention_2"], "needs CUDA and the flash-attn package"),
        (["--parallel_mode", "dist_flash_attn", "--sp-size", "2"], "ring kernels (flash / memory-efficient SDPA) need CUDA"),
        (["--parallel_mode", "ulysses_attn"], "dividing the 1 processes (got 1; the default is all processes)"),
        (["--parallel_mode", "sequence"], "expected one of data_parallel, ulysses_attn, ring_attn, dist_flash_attn"),
        (["--gradient-accumulate-every", "0"], "--gradient-accumulate-every must be at least 1, got 0"),
        (["--val-dataset", "/nonexistent/val"], "data directory /nonexistent/val does not exist"),
        (["--offload-activations"], "it needs CUDA and gradient checkpointing"),
        (["--anneal-steps", "-1"], "anneal_steps must be >= 0 (0 or 1: no annealing), got -1"),
        (["--learning-rate", "0"], "--learning-rate must be positive, got 0.0"),
        (["--warmup-steps", "-2"], "--warmup-steps must be >= 0, got -2"),
    ],
)
def test_bad_settings_exit_2_with_the_reason(base_model, packed_data, capsys, extra, message):
    assert run.main(_argv(base_model, packed_data, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_original_flag_names_are_accepted(base_model, packed_data):
    args = run.parse_args(_argv(base_model, packed_data, "--mask_token", "811", "--parallel_mode", "data_parallel",
                                  "--gradient-accumulate-every", "4", "--wandb", "Diffusion"))
    assert (args.mask_token, args.parallel_mode, args.gradient_accumulate_every, args.wandb) == (
        811, "data_parallel", 4, "Diffusion")
    assert args.data_config == "train_slim:0.693584,train_star:0.306416" and args.anneal_steps == 0


def _settings(**changes) -> TrainSettings:
    return TrainSettings(output_dir=Path("out"), dataset=Path("data"), **changes)


def test_learning_rate_warms_up_linearly_then_stays_constant():
    settings = _settings(learning_rate=2e-5, warmup_steps=4)
    assert [settings.learning_rate_at(s) for s in range(6)] == pytest.approx([5e-6, 1e-5, 1.5e-5, 2e-5, 2e-5, 2e-5])
    assert _settings(learning_rate=2e-5).learning_rate_at(0) == 2e-5


def test_settings_are_built_once_typed_and_frozen(base_model, packed_data, tmp_path):
    argv = _argv(base_model, packed_data, "--parallel_mode", "dist_flash_attn", "--batch-size", "3",
                 "--gradient-accumulate-every", "4", "--val-dataset", str(packed_data / "val"))
    argv[argv.index("--output-dir") + 1] = str(tmp_path / "run")
    settings = settings_from_args(run.parse_args(argv))
    assert isinstance(settings.output_dir, Path) and isinstance(settings.val_dataset, Path)
    assert settings.parallel_mode == "ring_attn" and settings.attn_implementation in ("sdpa", "flash_attention_2")
    assert settings.data_entries == (("train_slim", 0.693584), ("train_star", 0.306416))
    assert (settings.sample_tokens, settings.samples_per_step, settings.global_batch_size(2)) == (16, 12, 24)
    assert settings.block_size is None and settings.forward_columns == 16  # full-sequence diffusion by default
    assert settings.tokens_per_step(2) == 24 * 16
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 1
    assert settings.tracker_config()["output_dir"] == str(tmp_path / "run")
    assert "data_entries" not in settings.tracker_config()


def test_the_settings_defaults_are_the_command_line_defaults(base_model, packed_data):
    flags = vars(run.parse_args(_argv(base_model, packed_data)))
    defaults = _settings()
    for field in dataclasses.fields(TrainSettings):
        if field.name in flags and field.name not in ("output_dir", "dataset", "seq_length", "model",
                                                      "attn_implementation"):
            assert flags[field.name] == getattr(defaults, field.name), field.name
    assert flags["attn_implementation"] == "auto"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"anneal_steps": 10, "attn_implementation": "flash_attention_2"},
         "--anneal-steps 10 passes an attention mask, which flash_attention_2 cannot take"),
        ({"attn_implementation": "auto"}, "expected one of flash_attention_2, sdpa, eager once resolved"),
        ({"save_every": 0}, "--save-every must be at least 1, got 0"),
        ({"data_config": "train_slim"}, "expected PREFIX:WEIGHT"),
    ],
)
def test_settings_refuse_bad_values_on_construction(changes, message):
    with pytest.raises(UserInputError, match=message):
        _settings(**changes)


@pytest.mark.parametrize("anneal_steps", [0, 1])
def test_both_spellings_of_no_annealing_may_use_flash_attention(anneal_steps):
    assert _settings(anneal_steps=anneal_steps, attn_implementation="flash_attention_2").anneal_steps == anneal_steps
