"""Leaving torch.distributed cleanly, for every multi-process entry point (stages, 7B trainer, evaluation)."""

from __future__ import annotations

import torch.distributed as dist


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
