"""Checkpoints of the stages that appear only when complete, and which checkpoint a resume starts from.

The HF Trainer writes ``checkpoint-<step>`` in place: a run killed mid-save leaves a folder under a
checkpoint name with a 0-byte optimizer or no ``trainer_state.json``, and ``resume_from_checkpoint: true``
(the newest folder by name) then resumes from it. Here every rank writes into a hidden staging folder
``.checkpoint-<step>.partial`` that the main process renames once all ranks are done, so a folder named
``checkpoint-<step>`` is always complete; the final model is staged the same way. A full disk or an
unwritable folder during a save ends the run with one error line and leaves earlier checkpoints intact.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from ..entry_points import bool_word
from ..errors import UserInputError
from ..utils.files import (
    MODEL_WEIGHT_PATTERNS,
    apply_default_permissions,
    publish_model,
    replace_directory,
    storage_errors,
)

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def incomplete_reason(folder: Path) -> str | None:
    """Why ``folder`` is not a complete Trainer checkpoint (None when it is)."""
    state = folder / STATE_FILE
    if not state.is_file():
        return f"no {STATE_FILE}"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return f"{STATE_FILE} is not valid JSON"
    deepspeed_state = any(path.is_dir() for path in folder.glob("global_step*"))
    if not deepspeed_state and not any(any(folder.glob(pattern)) for pattern in MODEL_WEIGHT_PATTERNS):
        return "no model weights"
    empty = sorted(path.name for path in folder.iterdir() if path.is_file() and path.stat().st_size == 0)
    return f"empty file(s) {', '.join(empty)}" if empty else None


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """The complete ``checkpoint-<step>`` folders of ``output_dir``, oldest step first."""
    if not output_dir.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in output_dir.iterdir()
             if (match := _NAME.match(path.name)) and path.is_dir() and incomplete_reason(path) is None]
    return [path for _, path in sorted(found)]


def resume_checkpoint(resume: Any, output_dir: str) -> str | None:
    """The checkpoint ``resume_from_checkpoint`` names: a folder, checked complete, or with ``true`` the
    newest complete checkpoint of ``output_dir`` (the HF meaning of ``true``); None when not resuming."""
    if resume is None or resume is False:
        return None
    word = bool_word(resume) if isinstance(resume, str) else resume
    if word is False:
        return None
    if word is True:
        found = complete_checkpoints(Path(output_dir))
        if not found:
            raise UserInputError(
                f"resume_from_checkpoint: true, but output_dir {output_dir} holds no complete checkpoint-<step> folder"
            )
        return str(found[-1])
    folder = Path(resume)
    if not folder.is_dir():
        raise UserInputError(f"resume_from_checkpoint {resume} is not a checkpoint directory")
    reason = incomplete_reason(folder)
    if reason is not None:
        raise UserInputError(
            f"resume_from_checkpoint {resume} is an incomplete checkpoint ({reason}; its save was interrupted): "
            "name an earlier checkpoint, or set resume_from_checkpoint: true for the newest complete one"
        )
    return str(folder)


class AtomicCheckpoints:
    """Trainer mixin: ``checkpoint-<step>`` folders appear whole (see the module docstring)."""

    _staging_root: Path | None = None

    def _get_output_dir(self, trial: Any) -> str:
        if self._staging_root is not None:  # the Trainer's save writes <here>/checkpoint-<step>
            return str(self._staging_root)
        return super()._get_output_dir(trial)

    def _any_process(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any process (a collective: every process must call it)."""
        if self.args.world_size <= 1:
            return flag
        return bool(self.accelerator.reduce(torch.tensor([int(flag)], device=self.args.device), "sum").item())

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = Path(self._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = run_dir / f".{name}.partial"
        earlier = complete_checkpoints(run_dir)
        kept = f"the earlier checkpoint {earlier[-1]} is intact" if earlier else "no earlier checkpoint was saved"
        if self.args.should_save:
            for stale in run_dir.glob(f".{PREFIX_CHECKPOINT_DIR}-*.partial"):  # left by an interrupted save
                shutil.rmtree(stale, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        failure: BaseException | None = None
        self._staging_root = staging
        try:
            with storage_errors(f"checkpoint {run_dir / name}", kept=kept):
                super()._save_checkpoint(model, trial)
        except UserInputError as error:
            failure = error
        finally:
            self._staging_root = None
        if self._any_process(failure is not None):
            if self.args.should_save:
                shutil.rmtree(staging, ignore_errors=True)
            raise failure or UserInputError(f"another process failed to save checkpoint {run_dir / name}; {kept}")
        if self.args.should_save:
            with storage_errors(f"checkpoint {run_dir / name}", kept=kept):
                self._publish(staging, run_dir, name)
        self.accelerator.wait_for_everyone()

    def _publish(self, staging: Path, run_dir: Path, name: str) -> None:
        """Rename the staged checkpoint into place, then prune as the Trainer would have."""
        best = self.state.best_model_checkpoint
        if best is not None and Path(best).parent == staging:  # recorded while the save ran in staging
            self.state.best_model_checkpoint = str(run_dir / Path(best).name)
            self.state.save_to_json(str(staging / name / STATE_FILE))
        apply_default_permissions(staging / name)
        replace_directory(staging / name, run_dir / name)
        shutil.rmtree(staging, ignore_errors=True)
        rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                           best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        logger.info("saved checkpoint %s", run_dir / name)

    def save_final_model(self) -> None:
        """``save_model`` into ``output_dir`` through a staging folder: a kill leaves the earlier model whole."""
        output_dir = Path(self.args.output_dir)
        staging = output_dir / ".final-model.partial"
        with storage_errors(f"the final model to {output_dir}", kept="the checkpoints are intact"):
            if self.args.should_save:
                shutil.rmtree(staging, ignore_errors=True)
            self.save_model(str(staging))
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                publish_model(staging, output_dir)
            self.accelerator.wait_for_everyone()
