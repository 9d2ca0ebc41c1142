"""Resumable training state: atomic ``accelerator.save_state`` directories, pruning and resume checks.

A checkpoint is ``<output-dir>/checkpoint-<step>``: accelerate's state (model / optimizer / DeepSpeed
shards and RNG states of every rank) plus ``trainer_state.json``, the run record, which is written last.
All ranks write into a hidden staging directory that the main process renames into place, so a crash
mid-save leaves the previous checkpoints intact and never a half-written one under a checkpoint name; a
full disk ends the run with one error line. Multi-node runs need ``--output-dir`` on a shared filesystem,
as accelerate's own checkpointing does.

DeepSpeed restores its shards with ``torch.load(weights_only=False)``, i.e. by unpickling, which can run
code stored in the file. Resuming therefore only accepts folders whose run record this trainer wrote
(``"format": "diffullama-training"``); never resume from a checkpoint of unknown origin.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from llamafactory.errors import UserInputError
from llamafactory.utils.files import apply_default_permissions, atomic_write_text, replace_directory, storage_errors

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
RUN_RECORD_FORMAT = "diffullama-training"
LOG_FILE = "train_log.jsonl"
_NAME = re.compile(r"^checkpoint-(\d+)$")
# The run settings a resumed run must share with its checkpoint: together they fix the global batch,
# which samples the data stream yields at each step and the objective (block size; absent = None).
RESUME_INVARIANTS = (
    "micro_batch_size", "gradient_accumulation", "data_parallel_size", "sequence_parallel_size",
    "seq_length", "data_config", "seed", "mask_id", "block_size",
)


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / f"checkpoint-{step}"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = _NAME.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def find_resume_checkpoint(resume: str | None, output_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``None`` (fresh run), ``"auto"`` (latest in ``output_dir``, if any), or a path."""
    if resume is None:
        return None
    if resume == "auto":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            logger.info("--resume: no checkpoint in %s yet, starting from step 0", output_dir)
            return None
        return checkpoints[-1]
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise UserInputError(f"--resume {path}: not a complete checkpoint (no {STATE_FILE})")
    return path


def read_state(checkpoint: Path) -> dict[str, Any]:
    """The run record of a checkpoint this trainer wrote; any other folder is refused (see the module doc)."""
    try:
        state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise UserInputError(f"cannot resume {checkpoint}: {STATE_FILE} is not valid JSON ({error})") from None
    if not isinstance(state, dict) or state.get("format") != RUN_RECORD_FORMAT:
        raise UserInputError(
            f"cannot resume {checkpoint}: its {STATE_FILE} is not a train.py run record (no \"format\": "
            f"\"{RUN_RECORD_FORMAT}\"); DeepSpeed unpickles checkpoint files, so train.py only resumes from "
            "checkpoints it wrote itself"
        )
    return state


def previous_run_files(output_dir: Path) -> list[Path]:
    """What a train.py run leaves in ``output_dir`` that another run there would mix with its own."""
    if not output_dir.is_dir():
        return []
    return sorted(path for path in output_dir.iterdir()
                  if _NAME.match(path.name) or path.name == LOG_FILE or path.name.endswith(".partial"))


def clear_previous_run(output_dir: Path) -> None:
    """Remove an earlier run's checkpoints and log (``--overwrite``); its final model is replaced at the end."""
    for path in previous_run_files(output_dir):
        logger.info("--overwrite: removing %s of the previous run", path)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def truncate_log(output_dir: Path, step: int) -> None:
    """Keep the log records up to ``step`` (a resumed run writes the later ones again)."""
    path = output_dir / LOG_FILE
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line + "\n" for line in lines if (logged := _logged_step(line)) is not None and 0 < logged <= step]
    if len(kept) != len(lines):
        atomic_write_text(path, kept)


def _logged_step(line: str) -> int | None:
    """The step of a log record; None for a line cut short by a kill."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def check_resumable(saved: dict[str, Any], current: dict[str, Any], checkpoint: Path) -> None:
    """Fail when the run would not continue the checkpoint's global batch and data order."""
    for key in RESUME_INVARIANTS:
        if saved.get(key) != current.get(key):
            raise UserInputError(
                f"cannot resume {checkpoint}: it was trained with {key}={saved.get(key)!r}, this run has "
                f"{current.get(key)!r}; the global batch and data settings must stay the same"
            )


def save_checkpoint(accelerator: Any, output_dir: Path, state: dict[str, Any], keep_last: int) -> Path:
    """Save the full training state for ``state["step"]`` atomically; keep the newest ``keep_last``."""
    target = checkpoint_dir(output_dir, state["step"])
    staging = output_dir / f".{target.name}.partial"
    earlier = list_checkpoints(output_dir)
    kept = f"the earlier checkpoint {earlier[-1]} is intact" if earlier else "no earlier checkpoint was saved"
    if accelerator.is_main_process:
        for stale in output_dir.glob(".checkpoint-*.partial"):  # left by an interrupted save
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        with storage_errors(f"checkpoint {target}", kept=kept):
            accelerator.save_state(str(staging))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                atomic_write_text(staging / STATE_FILE, json.dumps({"format": RUN_RECORD_FORMAT, **state}, indent=2))
                apply_default_permissions(staging)
                replace_directory(staging, target)
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if accelerator.is_main_process:
        for old in list_checkpoints(output_dir)[:-keep_last]:
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
        logger.info("saved training state to %s", target)
    accelerator.wait_for_everyone()
    return target
