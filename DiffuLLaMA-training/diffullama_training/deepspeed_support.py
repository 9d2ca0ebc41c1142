"""What the trainer needs from accelerate's DeepSpeed integration beyond ``prepare``.

* the DeepSpeed JSON's batch and clipping entries come from train.py's flags;
* ZeRO-3 weights are gathered to write the final checkpoint;
* on CPU, accelerate's process state must start in its CPU mode before a DeepSpeed run (see below).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from accelerate import Accelerator
from accelerate.state import PartialState

from llamafactory.errors import UserInputError

from .settings import TrainSettings


def uses_deepspeed() -> bool:
    """Whether ``accelerate launch`` started this process with a DeepSpeed config."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def start_cpu_deepspeed_processes() -> None:
    """Join the process group of a DeepSpeed run on CPU before the ``Accelerator`` is built.

    accelerate picks its backend from the device: on a machine without GPUs it finds none for a DeepSpeed
    launch and records one process of rank 0 on every rank (each would act as the main process). Starting
    accelerate's process state in its CPU mode first (gloo, the real world size) and then building the
    Accelerator with DeepSpeed keeps every rank's index right; DeepSpeed reuses that process group.
    """
    if uses_deepspeed() and not torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        PartialState(cpu=True)


def configure_batch(accelerator: Accelerator, settings: TrainSettings, dp_size: int) -> None:
    """Fill the DeepSpeed config's ``"auto"`` batch and clipping entries; refuse conflicting ones."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    config = plugin.deepspeed_config
    for block in ("optimizer", "scheduler"):
        if block in config:
            raise UserInputError(
                f"the DeepSpeed config has a {block!r} block; train.py builds AdamW and the learning-rate schedule "
                "from its flags: remove the block"
            )
    wanted = {
        "train_micro_batch_size_per_gpu": settings.batch_size,
        "gradient_accumulation_steps": settings.gradient_accumulate_every,
        "train_batch_size": settings.global_batch_size(dp_size),
        "gradient_clipping": settings.max_grad_norm,
    }
    for key, value in wanted.items():
        current = config.get(key, "auto")
        if current == "auto":
            config[key] = value
        elif current != value:
            raise UserInputError(
                f"the DeepSpeed config sets {key}={current} but the command line implies {value}; set it to \"auto\""
            )


@contextlib.contextmanager
def full_parameters(accelerator: Accelerator, model: torch.nn.Module) -> Iterator[None]:
    """Gather ZeRO-3 partitioned weights on every rank for the duration (no-op otherwise)."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None or plugin.zero_stage != 3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        yield


def embedding_rows(model: torch.nn.Module) -> int:
    """Rows of the input embedding, also when ZeRO-3 loaded it partitioned (``ds_shape``)."""
    weight = model.get_input_embeddings().weight
    return int(getattr(weight, "ds_shape", weight.shape)[0])
