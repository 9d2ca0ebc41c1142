"""Atomic training-state checkpoints, pruning, and the resume checks (one process; the
multi-process save/resume round trip is in test_train_distributed.py)."""

from __future__ import annotations

import json

import pytest

from diffullama_training.checkpointing import (
    STATE_FILE,
    check_resumable,
    find_resume_checkpoint,
    list_checkpoints,
    read_state,
    save_checkpoint,
)
from llamafactory.errors import UserInputError


class OneProcess:
    """The part of ``Accelerator`` that checkpointing uses; ``save_state`` writes a marker file."""

    is_main_process = True

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, directory: str) -> None:
        from pathlib import Path

        Path(directory).mkdir(parents=True)
        (Path(directory) / "model.safetensors").write_text("weights")
        if self.fail:
            raise OSError("disk full")


def _state(step: int, **overrides) -> dict:
    return {"step": step, "micro_batch_size": 2, "gradient_accumulation": 4, "data_parallel_size": 8,
            "sequence_parallel_size": 1, "seq_length": 2048, "data_config": "a:1", "seed": 1, "mask_id": 811,
            **overrides}


def test_saves_are_complete_named_by_step_and_pruned(tmp_path):
    for step in (10, 20, 30):
        save_checkpoint(OneProcess(), tmp_path, _state(step), keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-20", "checkpoint-30"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-20", "checkpoint-30"]  # no staging left
    assert read_state(tmp_path / "checkpoint-30")["step"] == 30
    assert (tmp_path / "checkpoint-30" / "model.safetensors").read_text() == "weights"


def test_a_failed_save_keeps_earlier_checkpoints_and_is_never_listed(tmp_path):
    save_checkpoint(OneProcess(), tmp_path, _state(10), keep_last=1)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(OneProcess(fail=True), tmp_path, _state(20), keep_last=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-10"]
    assert find_resume_checkpoint("auto", tmp_path) == tmp_path / "checkpoint-10"
    assert (tmp_path / ".checkpoint-20.partial").is_dir()
    save_checkpoint(OneProcess(), tmp_path, _state(30), keep_last=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-30"]  # the interrupted staging is cleared


def test_saving_a_step_again_replaces_it_and_keeps_it_even_when_older(tmp_path):
    save_checkpoint(OneProcess(), tmp_path, _state(30), keep_last=1)
    save_checkpoint(OneProcess(), tmp_path, _state(10, seed=7), keep_last=1)  # resumed from an older state
    assert read_state(tmp_path / "checkpoint-10")["seed"] == 7
    save_checkpoint(OneProcess(), tmp_path, _state(10, seed=8), keep_last=5)
    assert read_state(tmp_path / "checkpoint-10")["seed"] == 8


def test_resume_target_resolution(tmp_path):
    assert find_resume_checkpoint(None, tmp_path) is None
    assert find_resume_checkpoint("auto", tmp_path) is None  # nothing saved yet: a fresh start
    (tmp_path / "checkpoint-5").mkdir()  # a directory without its state file is not a checkpoint
    assert find_resume_checkpoint("auto", tmp_path) is None
    with pytest.raises(UserInputError, match=f"not a complete checkpoint \\(no {STATE_FILE}\\)"):
        find_resume_checkpoint(str(tmp_path / "checkpoint-5"), tmp_path)
    for step in (9, 100, 20):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / STATE_FILE).write_text(json.dumps(_state(step)))
    assert find_resume_checkpoint("auto", tmp_path) == tmp_path / "checkpoint-100"


def test_resuming_with_another_global_batch_is_refused(tmp_path):
    check_resumable(_state(10), _state(0, learning_rate=1e-5), tmp_path)  # other settings may change
    with pytest.raises(UserInputError, match="gradient_accumulation=4, this run has 8; the global batch"):
        check_resumable(_state(10), _state(0, gradient_accumulation=8), tmp_path)
    with pytest.raises(UserInputError, match="data_parallel_size=8, this run has 16"):
        check_resumable(_state(10), _state(0, data_parallel_size=16), tmp_path)
