"""train.py --block-size B (block diffusion, docs/design.md#block-diffusion): the flag's checks, the loss of
each micro-batch being the core's block loss on the same samples and noise, the block size recorded in the
output, an exact resume, and two data-parallel processes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from diffullama_training import run
from diffullama_training import settings as settings_module
from diffullama_training.checkpointing import check_resumable
from diffullama_training.loop import train_batches
from diffullama_training.packed_dataset import mixed_stream, parse_data_config
from diffullama_training.parallel import DataParallel, Layout, make_plan
from diffullama_training.settings import DEFAULT_DATA_CONFIG, TrainSettings, settings_from_args
from llamafactory.ddm import load_causal_lm, load_diffusion_lm, noise_seed, training_loss
from llamafactory.errors import UserInputError
from tests.tiny import tiny_llama
from tests.tolerance import close
from tests.training.conftest import SEQ_LENGTH, run_training, torchrun

SEED = 42


def _argv(base_model: Path, packed_data: Path, output_dir: Path | str, *extra: str) -> list[str]:
    return ["--model", str(base_model), "--dataset", str(packed_data / "train"), "--output-dir", str(output_dir),
            "--seq-length", str(SEQ_LENGTH), *extra]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--block-size", "0"], "--block-size: block_size must be an integer >= 1"),
        (["--block-size", "-3"], "--block-size: block_size must be an integer >= 1"),
        (["--block-size", "4", "--parallel_mode", "ulysses_attn"],
         "--block-size 4 needs --parallel_mode data_parallel: ulysses_attn shards each sample"),
        (["--block-size", "4", "--parallel_mode", "dist_flash_attn"], "needs --parallel_mode data_parallel: ring_attn"),
    ],
)
def test_a_bad_block_size_is_one_error_line(base_model, packed_data, capsys, extra, message):
    assert run.main(_argv(base_model, packed_data, "unused", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err


def test_a_block_size_that_is_not_an_integer_stops_the_command_line(base_model, packed_data, capsys):
    with pytest.raises(SystemExit) as stopped:
        run.parse_args(_argv(base_model, packed_data, "unused", "--block-size", "2.5"))
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("argument --block-size: invalid int value: '2.5'")


def test_flash_attention_is_refused_with_a_block_size_before_any_work(base_model, packed_data, tmp_path):
    settings = TrainSettings(output_dir=tmp_path / "run", dataset=packed_data / "train", model=str(base_model),
                             seq_length=SEQ_LENGTH, attn_implementation="flash_attention_2", block_size=4)
    with pytest.raises(UserInputError, match="block diffusion needs an attention kernel that takes a 4D mask; "
                                             "attn_implementation 'flash_attention_2' cannot for llama"):
        run.train(settings)
    assert not (tmp_path / "run").exists()


def test_auto_attention_takes_sdpa_under_a_block_size(base_model, packed_data, tmp_path, monkeypatch):
    monkeypatch.setattr(settings_module.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(settings_module, "is_flash_attn_2_available", lambda: True)
    argv = _argv(base_model, packed_data, tmp_path / "run")
    assert settings_from_args(run.parse_args(argv)).attn_implementation == "flash_attention_2"
    blocks = settings_from_args(run.parse_args([*argv, "--block-size", "4"]))
    assert (blocks.attn_implementation, blocks.block_size) == ("sdpa", 4)


@pytest.mark.parametrize(("block_size", "columns"), [(None, 16), (4, 32), (6, 32), (16, 16), (100, 16)])
def test_a_block_size_below_the_sample_doubles_the_forward(block_size, columns):
    settings = TrainSettings(output_dir=Path("out"), dataset=Path("data"), seq_length=SEQ_LENGTH, block_size=block_size)
    assert settings.sample_tokens == SEQ_LENGTH + 1 and settings.forward_columns == columns
    assert settings.tokens_per_step(1) == settings.samples_per_step * (SEQ_LENGTH + 1)  # tokens trained, not columns


@pytest.mark.parametrize("block_size", [None, 4, 6])
def test_the_data_parallel_step_is_the_core_loss(block_size):
    model = tiny_llama(64, max_position_embeddings=32, seed=3)
    samples = torch.randint(4, 60, (2, 16), generator=torch.Generator().manual_seed(0))
    backward_called = []
    plan = make_plan(Layout("data_parallel", 0, 1), block_size)
    assert plan == DataParallel(block_size)
    step = plan.step(model, samples, 3, torch.Generator().manual_seed(7), 1.0, backward_called.append)
    core = training_loss(model, samples, 3, generator=torch.Generator().manual_seed(7), block_size=block_size)
    assert torch.equal(step.loss, core.loss.detach()) and len(backward_called) == 1
    full = training_loss(model, samples, 3, generator=torch.Generator().manual_seed(7))
    assert (block_size is None) == torch.equal(core.loss, full.loss)  # a block size changes the objective


def test_resuming_with_another_block_size_is_refused(tmp_path):
    saved = {"seq_length": 15, "seed": 1, "block_size": 4}
    check_resumable({"seq_length": 15, "seed": 1}, {"seq_length": 15, "seed": 1, "block_size": None}, tmp_path)
    with pytest.raises(UserInputError, match="block_size=4, this run has None"):
        check_resumable(saved, {**saved, "block_size": None}, tmp_path)
    with pytest.raises(UserInputError, match="block_size=4, this run has 8"):
        check_resumable(saved, {**saved, "block_size": 8}, tmp_path)


def expected_first_step_loss(base_model: Path, packed_data: Path, block_size: int, batch_size: int,
                             accumulation: int, world_size: int = 1) -> float:
    """Step 1's logged loss recomputed from the core: ``training_loss`` on every rank's micro-batches of the
    untrained model, with the data stream and noise seeds the trainer documents, averaged."""
    model = load_causal_lm(base_model, dtype=torch.float32, attn_implementation="sdpa").train()
    mask_id = AutoTokenizer.from_pretrained(base_model).mask_token_id
    losses = []
    for rank in range(world_size):
        stream = mixed_stream(packed_data / "train", parse_data_config(DEFAULT_DATA_CONFIG), SEQ_LENGTH + 1,
                              seed=SEED, rank=rank, world_size=world_size, vocab_size=model.config.vocab_size)
        batches = train_batches(stream, 0, batch_size, torch.device("cpu"))
        for micro_step in range(accumulation):
            generator = torch.Generator().manual_seed(noise_seed(SEED, 0, micro_step, rank, world_size))
            with torch.no_grad():
                losses.append(float(training_loss(model, next(batches), mask_id, generator=generator,
                                                  block_size=block_size).loss))
    return sum(losses) / len(losses)


def _train_log(output_dir: Path) -> tuple[dict[int, dict], dict[int, float]]:
    train, val = {}, {}
    for line in (output_dir / "train_log.jsonl").read_text().splitlines():
        record = json.loads(line)
        (val.__setitem__(record["step"], record["val_loss"]) if "val_loss" in record
         else train.__setitem__(record["step"], record))
    return train, val


def _run_args(base_model: Path, packed_data: Path, output_dir: Path, steps: int, *extra: str) -> list[str]:
    return [*_argv(base_model, packed_data, output_dir), "--max-train-steps", str(steps), "--learning-rate", "3e-3",
            "--mixed-precision", "no", "--log-every", "1", "--no-gradient-checkpointing", "--seed", str(SEED), *extra]


@pytest.mark.slow
def test_a_block_run_trains_the_block_loss_records_it_and_resumes_exactly(base_model, packed_data, tmp_path):
    args = ["--block-size", "6", "--batch-size", "2", "--gradient-accumulate-every", "2", "--save-every", "4",
            "--val-dataset", str(packed_data / "val"), "--eval-every", "8", "--val-blocks", "8",
            "--eval-diffusion-steps", "2"]  # samples of 16 tokens: blocks of 6, 6 and 4
    run_training(_run_args(base_model, packed_data, tmp_path / "full", 8, *args))
    train, val = _train_log(tmp_path / "full")
    assert sorted(train) == list(range(1, 9)) and all(math.isfinite(r["loss"]) for r in train.values())
    assert train[1]["loss"] == close(expected_first_step_loss(base_model, packed_data, 6, 2, 2))
    assert sorted(val) == [0, 8] and val[8] < val[0], val  # the block bound on held-out text falls
    state = json.loads((tmp_path / "full" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["block_size"] == 6
    assert json.loads((tmp_path / "full" / "config.json").read_text())["block_size"] == 6
    model, _ = load_diffusion_lm(tmp_path / "full")
    assert model.block_size == 6

    run_training(_run_args(base_model, packed_data, tmp_path / "resumed", 8, *args, "--resume",
                           str(tmp_path / "full" / "checkpoint-4")))
    resumed, _ = _train_log(tmp_path / "resumed")
    assert sorted(resumed) == [5, 6, 7, 8]
    for step in resumed:
        assert resumed[step]["loss"] == close(train[step]["loss"]), step
        assert resumed[step]["grad_norm"] == close(train[step]["grad_norm"]), step
    final, again = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.allclose(final[k], again[k], atol=1e-6) for k in final)


@pytest.mark.slow
def test_two_data_parallel_processes_train_the_block_loss_of_their_samples(base_model, packed_data, tmp_path):
    out = tmp_path / "ddp"
    run_training(_run_args(base_model, packed_data, out, 2, "--block-size", "4", "--batch-size", "2",
                           "--gradient-accumulate-every", "1"), torchrun(2))
    train, _ = _train_log(out)
    assert train[1]["loss"] == close(expected_first_step_loss(base_model, packed_data, 4, 2, 1, world_size=2))
    assert math.isfinite(train[2]["loss"])
    assert json.loads((out / "config.json").read_text())["block_size"] == 4
    assert load_diffusion_lm(out)[0].block_size == 4
