"""train.py as a user runs it (one CPU process, a few seconds each): nothing saved is lost, bad input is one
line, a model without a tokenizer trains on packed ids."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, LlamaForCausalLM

from llamafactory.ddm import load_causal_lm
from llamafactory.quickstart import DIFFULLAMA
from llamafactory.quickstart import main as quickstart
from model import DiscreteDiffusionModel
from tests.tiny import tiny_llama, tiny_tokenizer
from tests.training.conftest import SEQ_LENGTH, run_training
from tests.training.test_checkpointing import checksums

pytestmark = pytest.mark.slow  # each case launches train.py (5-20 s)


def _argv(model: Path, data: Path, output: Path, steps: int, *extra: str) -> list[str]:
    return ["--model", str(model), "--dataset", str(data), "--output-dir", str(output), "--seq-length",
            str(SEQ_LENGTH), "--batch-size", "2", "--gradient-accumulate-every", "1", "--max-train-steps", str(steps),
            "--save-every", "2", "--log-every", "1", "--mixed-precision", "no", "--no-gradient-checkpointing", *extra]


def _logged_steps(output: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (output / "train_log.jsonl").read_text().splitlines()]


def _error_line(result) -> str:
    """The one ``error:`` line of a run that stopped on bad input (exit code 2), and no traceback."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return errors[0]


def test_a_folder_holding_a_run_is_refused_resumed_without_repeats_or_replaced(base_model, packed_data, tmp_path):
    output = tmp_path / "run"
    run_training(_argv(base_model, packed_data / "train", output, 4))
    saved = checksums(output)
    again = run_training(_argv(base_model, packed_data / "train", output, 6), expect_success=False)
    assert f"--output-dir {output} is not empty" in _error_line(again) and "--resume" in again.stderr
    assert checksums(output) == saved

    run_training(_argv(base_model, packed_data / "train", output, 6, "--resume", str(output / "checkpoint-2")))
    assert _logged_steps(output) == [1, 2, 3, 4, 5, 6]  # steps 3 and 4 of the first run were cut, not repeated
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    assert (output / "config.json").is_file() and (output / "model.safetensors").is_file()  # the original's place

    run_training(_argv(base_model, packed_data / "train", output, 2, "--overwrite"))
    assert _logged_steps(output) == [1, 2]
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-2"]
    both = run_training(_argv(base_model, packed_data / "train", output, 2, "--overwrite", "--resume"),
                        expect_success=False)
    assert "give one" in _error_line(both)


def _write_tinyllama_file(path: Path, tokens: np.ndarray) -> None:
    """A packed file written from TinyLlama's format description, not with the project's writer."""
    header = b"LITPKDS" + struct.pack("<Q", 1) + struct.pack("<B", 8) + struct.pack("<Q", len(tokens))
    path.write_bytes(header + tokens.astype(np.uint16).tobytes())


VOCAB = 300


@pytest.fixture(scope="module")
def tokenizerless(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny LLaMA saved with config and weights only, and token ids in independently written files (its
    tokenizer is saved apart, in ``tokenizer/``, for printing text)."""
    root = tmp_path_factory.mktemp("tokenizerless")
    tokenizer = tiny_tokenizer(VOCAB)
    tokenizer.save_pretrained(root / "tokenizer")
    tiny_llama(len(tokenizer), max_position_embeddings=64, seed=5).save_pretrained(root / "model")
    (root / "data").mkdir()
    generator = np.random.default_rng(0)
    for prefix in ("train_slim", "train_star"):
        for index in range(2):
            ids = generator.integers(3, 250, size=16 * 8)
            ids[::16] = 1  # a BOS at every block start
            _write_tinyllama_file(root / "data" / f"{prefix}_{index:010d}.bin", ids)
    return root / "model", root / "data"


def test_a_model_without_tokenizer_trains_with_mask_token_and_loads_everywhere(tokenizerless, tmp_path, capsys):
    model_dir, data = tokenizerless
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "generation_config.json",
                                                           "model.safetensors"]
    refused = run_training(_argv(model_dir, data, tmp_path / "no-mask", 2), expect_success=False)
    assert "no usable tokenizer" in _error_line(refused) and "pass --mask_token ID" in refused.stderr

    output = tmp_path / "run"
    run_training(_argv(model_dir, data, output, 4, "--mask_token", "255"))
    config = AutoConfig.from_pretrained(output)
    assert config.mask_token_id == 255 and config.is_causal is False
    assert not list(output.glob("tokenizer*"))
    trained = DiscreteDiffusionModel(LlamaForCausalLM.from_pretrained(output), config, tokenizer=None)  # model.py
    assert trained.mask_id == 255
    assert torch.isfinite(trained(torch.tensor([[1, 255, 255, 7]]))).all()
    assert load_causal_lm(output).config.mask_token_id == 255

    assert quickstart(DIFFULLAMA, ["--model_name", str(output), "--diffusion_steps", "2"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: no usable tokenizer") and "text in and out needs one" in error
    assert quickstart(DIFFULLAMA, ["--model_name", str(output), "--base_model_name", str(model_dir.parent / "tokenizer"),
                                   "--prompt", "the cat", "--gen_len", "12", "--diffusion_steps", "2"]) == 0


def test_token_ids_beyond_the_vocabulary_stop_with_the_file(tokenizerless, tmp_path):
    model_dir, data = tokenizerless
    bad = tmp_path / "data"
    bad.mkdir()
    for path in data.iterdir():
        tokens = np.fromfile(path, dtype=np.uint16, offset=24)
        tokens[5] = VOCAB + 7
        _write_tinyllama_file(bad / path.name, tokens)
    result = run_training(_argv(model_dir, bad, tmp_path / "run", 2, "--mask_token", "255"), expect_success=False)
    assert f"token id {VOCAB + 7} at position 5" in _error_line(result) and f"vocabulary of {VOCAB}" in result.stderr


def test_a_sequence_longer_than_the_window_is_refused_before_training(base_model, packed_data, tmp_path):
    argv = _argv(base_model, packed_data / "train", tmp_path / "run", 2)
    argv[argv.index("--seq-length") + 1] = "64"
    result = run_training(argv, expect_success=False)
    assert "--seq-length 64 (samples of seq_length + 1 tokens) needs 65 positions, more than the 64" in _error_line(result)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


FULL_DISK_AT_STEP_4 = """
import errno, os, sys
from pathlib import Path
import accelerate

save_state = accelerate.Accelerator.save_state


def failing(self, output_dir=None, **kwargs):
    if ".checkpoint-4." in str(output_dir):  # part of the state is written, then the disk is full
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(output_dir) / "optimizer.bin"))
    return save_state(self, output_dir, **kwargs)


accelerate.Accelerator.save_state = failing
sys.argv = sys.argv[1:]  # [train.py, flags...]
from diffullama_training.run import main
sys.exit(main())
"""


def test_a_full_disk_mid_save_stops_with_one_line_and_keeps_the_earlier_checkpoint(base_model, packed_data, tmp_path):
    script = tmp_path / "full_disk_train.py"
    script.write_text(FULL_DISK_AT_STEP_4)
    output = tmp_path / "run"
    run_training(_argv(base_model, packed_data / "train", output, 2))
    saved = {name: digest for name, digest in checksums(output).items() if name.startswith("checkpoint-2")}
    result = run_training(_argv(base_model, packed_data / "train", output, 6, "--resume"),
                          launcher=[sys.executable, str(script)], expect_success=False)
    line = _error_line(result)
    assert "no space left" in line and "checkpoint-4" in line and "checkpoint-2 is intact" in line
    after = checksums(output)
    assert {name: digest for name, digest in after.items() if name.startswith("checkpoint-2")} == saved
    assert not any(name.startswith(("checkpoint-4", ".checkpoint-4")) for name in after)
    run_training(_argv(base_model, packed_data / "train", output, 6, "--resume"))  # space freed: it continues
    assert _logged_steps(output) == [1, 2, 3, 4, 5, 6]


def test_resuming_a_checkpoint_another_program_wrote_is_refused(base_model, packed_data, tmp_path):
    foreign = tmp_path / "hf" / "checkpoint-500"
    foreign.mkdir(parents=True)
    (foreign / "trainer_state.json").write_text(json.dumps({"global_step": 500}))
    (foreign / "rng_state.pth").write_bytes(b"pickled")
    result = run_training(_argv(base_model, packed_data / "train", tmp_path / "run", 2, "--resume", str(foreign)),
                          expect_success=False)
    assert "is not a train.py run record" in _error_line(result)
