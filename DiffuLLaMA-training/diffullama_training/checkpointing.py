"""Resumable training state: atomic ``accelerator.save_state`` directories, pruning and resume checks.

A checkpoint is ``<output-dir>/checkpoint-<step>``: accelerate's state (model / optimizer / DeepSpeed
shards and RNG states of every rank) plus ``trainer_state.json``, which is written last. All ranks
write into a hidden staging directory that the main process renames into place, so a crash mid-save
leaves the previous checkpoints intact and never a half-written one under a checkpoint name. Multi-node
runs need ``--output-dir`` on a shared filesystem, as accelerate's own checkpointing does.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from llamafactory.errors import UserInputError
from llamafactory.utils.files import atomic_write_text, replace_directory

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
# The run settings a resumed run must share with its checkpoint: together they fix the global batch
# and which samples the data stream yields at each step.
RESUME_INVARIANTS = (
    "micro_batch_size", "gradient_accumulation", "data_parallel_size", "sequence_parallel_size",
    "seq_length", "data_config", "seed", "mask_id",
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
    return json.loads((checkpoint / STATE_FILE).read_text())


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
    if accelerator.is_main_process:
        for stale in output_dir.glob(".checkpoint-*.partial"):  # left by an interrupted save
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_text(staging / STATE_FILE, json.dumps(state, indent=2))
        replace_directory(staging, target)
        for old in list_checkpoints(output_dir)[:-keep_last]:
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
        logger.info("saved training state to %s", target)
    accelerator.wait_for_everyone()
    return target
