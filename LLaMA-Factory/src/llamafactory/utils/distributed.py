"""torch.distributed for every multi-process entry point (stages, 7B trainer, evaluation): which process
this is, sharding examples by index, gathering on the main process, and leaving cleanly."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Launch:
    """This process's place in a ``torchrun`` / ``accelerate launch`` job (both set the same variables)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Launch:
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                   int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """``device`` for this process: a bare ``cuda`` becomes this process's own GPU, ``cuda:LOCAL_RANK``."""
        if device.type == "cuda" and device.index is None and self.world_size > 1:
            return torch.device("cuda", self.local_rank)
        return device


SINGLE_PROCESS = Launch()


def init_object_group(launch: Launch) -> None:
    """A gloo group for gathering Python objects and barriers (CPU or GPU models alike); none for one process."""
    if launch.world_size > 1 and not dist.is_initialized():
        dist.init_process_group("gloo", rank=launch.rank, world_size=launch.world_size)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather_to_main(value: Any, launch: Launch) -> list[Any] | None:
    """Every process's ``value`` on the main process (in rank order), None elsewhere."""
    if launch.world_size == 1:
        return [value]
    gathered: list[Any] | None = [None] * launch.world_size if launch.is_main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def all_gather_tensor(tensor: torch.Tensor, launch: Launch) -> torch.Tensor:
    """Every process's ``tensor`` (same shape everywhere), stacked (0-d) or concatenated along dim 0, on
    ``tensor``'s device; sent through the gloo group on CPU."""
    if launch.world_size == 1:
        return tensor
    parts = [torch.empty_like(tensor, device="cpu") for _ in range(launch.world_size)]
    dist.all_gather(parts, tensor.cpu())
    joined = torch.stack(parts) if tensor.dim() == 0 else torch.cat(parts)
    return joined.to(tensor.device)


def shard_indices(count: int, world_size: int, rank: int, *, pad: bool = True) -> list[int]:
    """This process's example indices ``rank, rank + world_size, ...``; with ``pad`` every process gets
    ``ceil(count / world_size)`` of them (the last index repeated where needed, for sharded models that
    must run the same number of forward passes)."""
    if count == 0 or not pad:
        return list(range(rank, count, world_size))
    per_rank = -(-count // world_size)
    return [min(rank + world_size * i, count - 1) for i in range(per_rank)]


def close_process_group(*, synchronize: bool) -> None:
    """Tear down torch.distributed before the interpreter exits.

    gloo's worker threads destroy a finished collective's tensors themselves, which needs the GIL; one still
    doing so while Python finalizes is killed mid-unwind and the process aborts ("terminate called without
    an active exception"). A final barrier, which every rank reaches only after its earlier collectives
    are done and released, closes that window; then the group is destroyed.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if synchronize:
        dist.barrier()
    dist.destroy_process_group()
