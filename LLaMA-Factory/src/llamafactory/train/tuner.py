"""``run_exp``: parse a config, check its inputs, and run its stage."""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback

from ..hparams import TrainingArguments, get_train_args
from ..utils.distributed import close_process_group
from .ddm import run_ddm
from .preflight import check_run_inputs
from .pt import run_pt
from .sft import run_sft

logger = logging.getLogger(__name__)

WORKFLOWS = {"pt": run_pt, "sft": run_sft, "ddm": run_ddm, "ddm-sft": run_ddm}


def _configure_logging(training_args: TrainingArguments) -> None:
    """Progress messages of this package: INFO on the logging process, the Trainer's level elsewhere."""
    passive = training_args.log_level == "passive"
    level = logging.INFO if training_args.should_log and passive else training_args.get_process_log_level()
    package = logging.getLogger("llamafactory")
    package.setLevel(level)
    if not package.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(levelname)s|%(name)s] %(message)s"))
        package.addHandler(handler)


def run_exp(args: dict[str, Any] | list[str] | None = None, callbacks: list[TrainerCallback] | None = None) -> None:
    """Run one training / evaluation / prediction job described by ``args`` (dict, argv list, or sys.argv)."""
    model_args, data_args, training_args, finetuning_args, generating_args = get_train_args(args)
    _configure_logging(training_args)
    check_run_inputs(model_args, data_args, training_args, finetuning_args)
    logger.info("stage %s, output_dir %s", finetuning_args.stage, training_args.output_dir)
    workflow = WORKFLOWS[finetuning_args.stage]
    try:
        workflow(model_args, data_args, training_args, finetuning_args, generating_args, callbacks)
    except BaseException:
        close_process_group(synchronize=False)  # another rank may be stuck in a collective: no barrier
        raise
    close_process_group(synchronize=True)
