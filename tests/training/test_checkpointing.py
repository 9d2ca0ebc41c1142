"""Atomic training-state checkpoints, pruning, the run record, the log after a resume, and the resume
checks (one process; the multi-process save/resume round trip is in test_train_distributed.py)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest

from diffullama_training.checkpointing import (
    LOG_FILE,
    RUN_RECORD_FORMAT,
    STATE_FILE,
    check_resumable,
    clear_previous_run,
    find_resume_checkpoint,
    list_checkpoints,
    previous_run_files,
    read_state,
    save_checkpoint,
    truncate_log,
)
from llamafactory.errors import UserInputError


class OneProcess:
    """The part of ``Accelerator`` that checkpointing uses; ``save_state`` writes a weights file, and with
    ``fail`` stops part-way through (after the weights, before the optimizer) with that OS error."""

    is_main_process = True

    def __init__(self, fail: int | None = None) -> None:
        self.fail = fail

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, directory: str) -> None:
        Path(directory).mkdir(parents=True)
        (Path(directory) / "model.safetensors").write_text("weights")
        if self.fail is not None:
            (Path(directory) / "optimizer.bin").write_bytes(b"")
            raise OSError(self.fail, os.strerror(self.fail), str(Path(directory) / "optimizer.bin"))


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


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


def test_a_full_disk_mid_save_is_one_error_and_keeps_the_earlier_checkpoint(tmp_path):
    save_checkpoint(OneProcess(), tmp_path, _state(10), keep_last=1)
    before = checksums(tmp_path)
    with pytest.raises(UserInputError, match="cannot write checkpoint .*checkpoint-20: no space left on the device "
                                             ".*; the earlier checkpoint .*checkpoint-10 is intact"):
        save_checkpoint(OneProcess(fail=errno.ENOSPC), tmp_path, _state(20), keep_last=1)
    assert checksums(tmp_path) == before  # nothing of the failed save is left, nothing earlier changed
    assert find_resume_checkpoint("auto", tmp_path) == tmp_path / "checkpoint-10"


def test_a_save_killed_part_way_is_never_listed_and_is_cleared_by_the_next(tmp_path):
    save_checkpoint(OneProcess(), tmp_path, _state(10), keep_last=1)
    with pytest.raises(OSError, match="Input/output error"):  # any other failure propagates as it is
        save_checkpoint(OneProcess(fail=errno.EIO), tmp_path, _state(20), keep_last=1)
    killed = tmp_path / ".checkpoint-20.partial"  # what a kill (no exception handler runs) leaves
    (killed / "sub").mkdir(parents=True)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-10"]
    assert find_resume_checkpoint("auto", tmp_path) == tmp_path / "checkpoint-10"
    save_checkpoint(OneProcess(), tmp_path, _state(30), keep_last=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-30"]


def test_only_checkpoints_with_this_trainers_run_record_are_resumed(tmp_path):
    save_checkpoint(OneProcess(), tmp_path, _state(10), keep_last=1)
    assert read_state(tmp_path / "checkpoint-10")["format"] == RUN_RECORD_FORMAT
    foreign = tmp_path / "other" / "checkpoint-500"  # e.g. an HF Trainer checkpoint: its own trainer_state.json
    foreign.mkdir(parents=True)
    (foreign / STATE_FILE).write_text(json.dumps({"global_step": 500, "log_history": []}))
    with pytest.raises(UserInputError, match="not a train.py run record .*DeepSpeed unpickles checkpoint files"):
        read_state(find_resume_checkpoint(str(foreign), tmp_path))
    (foreign / STATE_FILE).write_text("{not json")
    with pytest.raises(UserInputError, match="trainer_state.json is not valid JSON"):
        read_state(foreign)


def test_the_log_is_cut_back_to_the_resumed_step(tmp_path):
    records = [{"step": s, "loss": 1.0} for s in (10, 20, 30)] + [{"step": 20, "val_loss": 2.0}]
    (tmp_path / LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 4')  # cut by a kill
    truncate_log(tmp_path, 20)
    kept = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert kept == [records[0], records[1], records[3]]
    truncate_log(tmp_path, 0)  # a resume that found no checkpoint starts the log afresh
    assert (tmp_path / LOG_FILE).read_text() == ""


def test_overwrite_clears_the_previous_runs_checkpoints_and_log_only(tmp_path):
    save_checkpoint(OneProcess(), tmp_path, _state(10), keep_last=1)
    (tmp_path / LOG_FILE).write_text("{}\n")
    (tmp_path / ".checkpoint-20.partial").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    assert [p.name for p in previous_run_files(tmp_path)] == [".checkpoint-20.partial", "checkpoint-10", LOG_FILE]
    clear_previous_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


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
