"""What the trainer needs from accelerate's DeepSpeed integration beyond ``prepare``.

* the DeepSpeed JSON's batch and clipping entries come from train.py's flags;
* ZeRO-3 weights are gathered to write the final checkpoint;
* on CPU, accelerate must be told the real world size of a DeepSpeed run (see below).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

from llamafactory.ddm import DiffusionInputError


def uses_deepspeed() -> bool:
    """Whether ``accelerate launch`` started this process with a DeepSpeed config."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def adopt_cpu_deepspeed_world(accelerator: Accelerator) -> None:
    """Make accelerate see every rank of a DeepSpeed run on CPU.

    accelerate's backend detection has no CPU DeepSpeed case: DeepSpeed joins a gloo world of N ranks
    while accelerate records one process of index 0 on each, so every rank would act as the main
    process. Copy the real world from torch.distributed into accelerate's shared state.
    """
    if accelerator.distributed_type != DistributedType.DEEPSPEED or not dist.is_initialized():
        return
    if accelerator.num_processes == dist.get_world_size():
        return
    real = {"num_processes": dist.get_world_size(), "process_index": dist.get_rank(),
            "local_process_index": int(os.environ.get("LOCAL_RANK", 0))}
    for shared in (PartialState._shared_state, AcceleratorState._shared_state):
        shared.update(real)


def configure_batch(accelerator: Accelerator, micro_batch: int, accumulation: int, dp_size: int,
                    max_grad_norm: float) -> None:
    """Fill the DeepSpeed config's ``"auto"`` batch and clipping entries; refuse conflicting ones."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    config = plugin.deepspeed_config
    for block in ("optimizer", "scheduler"):
        if block in config:
            raise DiffusionInputError(
                f"the DeepSpeed config has a {block!r} block; train.py builds AdamW and the learning-rate schedule "
                "from its flags: remove the block"
            )
    wanted = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro_batch * accumulation * dp_size,
        "gradient_clipping": max_grad_norm,
    }
    for key, value in wanted.items():
        current = config.get(key, "auto")
        if current == "auto":
            config[key] = value
        elif current != value:
            raise DiffusionInputError(
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
