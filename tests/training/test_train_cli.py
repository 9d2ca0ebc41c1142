"""train.py refuses unusable settings with one-line errors before starting any process group."""

from __future__ import annotations

import argparse

import pytest

from diffullama_training import loop, run


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


def test_learning_rate_warms_up_linearly_then_stays_constant():
    args = argparse.Namespace(learning_rate=2e-5, warmup_steps=4)
    assert [loop.learning_rate(s, args) for s in range(6)] == pytest.approx([5e-6, 1e-5, 1.5e-5, 2e-5, 2e-5, 2e-5])
    assert loop.learning_rate(0, argparse.Namespace(learning_rate=2e-5, warmup_steps=0)) == 2e-5
