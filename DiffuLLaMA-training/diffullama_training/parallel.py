"""Parallel plans of the trainer (how one micro-batch's loss is computed across ranks), one per mode.

* ``data_parallel``: every rank trains on its own samples (DDP or DeepSpeed ZeRO through accelerate).
* ``ulysses_attn``: DeepSpeed-Ulysses (ALST) via accelerate's ``ParallelismConfig(sp_backend="deepspeed")``;
  the sequence is cut into contiguous shards and attention heads are exchanged all-to-all.
* ``ring_attn`` (alias ``dist_flash_attn``, the original name): PyTorch context parallelism
  (``torch.distributed.tensor.experimental.context_parallel``), ring attention over SDPA; CUDA only.

Ranks are grouped consecutively: ranks ``[k * sp, (k + 1) * sp)`` share one sequence (same data, same
noise) and each holds one shard. Noise is drawn on the whole sample before sharding, exactly as the
data-parallel path draws it, so every mode optimises the same objective on the same samples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from llamafactory.ddm import (
    DiffusionLoss,
    align_to_outputs,
    annealed_steps,
    corrupt,
    diffusion_loss,
    sample_noise_level,
    training_loss,
)
from llamafactory.errors import UserInputError

MODES = ("data_parallel", "ulysses_attn", "ring_attn")
ALIASES = {"dist_flash_attn": "ring_attn"}


def canonical_mode(name: str) -> str:
    """The mode's canonical name (``dist_flash_attn`` -> ``ring_attn``)."""
    mode = ALIASES.get(name, name)
    if mode not in MODES:
        raise UserInputError(f"--parallel_mode {name!r}: expected one of {', '.join(MODES + tuple(ALIASES))}")
    return mode


@dataclass(frozen=True)
class Layout:
    """Where this process sits: ``world_size = dp_size * sp_size`` with consecutive SP groups."""

    mode: str
    rank: int
    world_size: int
    sp_size: int = 1

    @property
    def sp_rank(self) -> int:
        return self.rank % self.sp_size

    @property
    def dp_rank(self) -> int:
        return self.rank // self.sp_size

    @property
    def dp_size(self) -> int:
        return self.world_size // self.sp_size


def check_mode(
    mode: str,
    *,
    world_size: int,
    sp_size: int,
    sample_tokens: int,
    attn_implementation: str,
    anneal_steps: int,
    uses_deepspeed: bool,
    cuda: bool,
    num_heads: int,
    num_kv_heads: int,
) -> None:
    """Reject a mode that cannot run as configured, before any weights are loaded."""
    if mode == "data_parallel":
        if sp_size != 1:
            raise UserInputError("--sp-size applies to ulysses_attn and ring_attn only; data_parallel uses 1")
        return
    if mode == "ring_attn" and not cuda:
        raise UserInputError(
            "--parallel_mode ring_attn (dist_flash_attn) runs PyTorch context parallelism, whose ring kernels "
            "(flash / memory-efficient SDPA) need CUDA; on CPU use data_parallel or ulysses_attn"
        )
    if sp_size < 2 or world_size % sp_size:
        raise UserInputError(
            f"{mode} needs --sp-size of at least 2 dividing the {world_size} processes (got {sp_size}; "
            "the default is all processes)"
        )
    if sample_tokens % sp_size or (mode == "ring_attn" and sample_tokens % (2 * sp_size)):
        unit = sp_size if mode == "ulysses_attn" else 2 * sp_size
        raise UserInputError(
            f"{mode} cuts each sample of --seq-length + 1 = {sample_tokens} tokens into equal shards: it must be a "
            f"multiple of {unit} (e.g. --seq-length {sample_tokens // unit * unit - 1})"
        )
    if annealed_steps(anneal_steps):
        raise UserInputError(f"--anneal-steps {anneal_steps} needs a full attention mask, which {mode} cannot take; "
                             "use data_parallel (or --anneal-steps 0: no annealing)")
    if mode == "ulysses_attn":
        if not uses_deepspeed:
            raise UserInputError(
                "ulysses_attn runs DeepSpeed-Ulysses through accelerate: launch with a DeepSpeed config "
                "(e.g. accelerate_configs/single_node.yaml)"
            )
        if attn_implementation == "eager":
            raise UserInputError("ulysses_attn needs --attn-implementation sdpa or flash_attention_2, not eager")
        if num_heads % sp_size or (num_kv_heads % sp_size and sp_size % num_kv_heads):
            raise UserInputError(
                f"ulysses_attn splits attention heads: {num_heads} query / {num_kv_heads} key-value heads "
                f"do not divide among --sp-size {sp_size}"
            )
    if mode == "ring_attn" and attn_implementation != "sdpa":
        raise UserInputError("ring_attn patches PyTorch SDPA: use --attn-implementation sdpa")


def accelerator_kwargs(mode: str, sp_size: int, dp_size: int, sample_tokens: int, attn_implementation: str) -> dict:
    """Extra ``Accelerator(...)`` arguments for the mode: the Ulysses parallelism config.

    ``dp_replicate_size`` tells accelerate how many replicas share the global batch; without it the
    DeepSpeed batch size it derives would count a single replica.
    """
    if mode != "ulysses_attn":
        return {}
    from accelerate.parallelism_config import ParallelismConfig
    from accelerate.utils import DeepSpeedSequenceParallelConfig

    handler = DeepSpeedSequenceParallelConfig(
        sp_seq_length=sample_tokens, sp_seq_length_is_variable=False, sp_attn_implementation=attn_implementation
    )
    config = ParallelismConfig(dp_replicate_size=dp_size, sp_size=sp_size, sp_backend="deepspeed", sp_handler=handler)
    return {"parallelism_config": config}


@dataclass
class StepLoss:
    """One micro-batch's ELBO-weighted loss and unweighted masked cross-entropy, detached, for logging."""

    loss: torch.Tensor
    unweighted_loss: torch.Tensor

    @classmethod
    def of(cls, result: DiffusionLoss, share: torch.Tensor | float = 1.0) -> StepLoss:
        """The logged pair of ``result``, scaled by this rank's ``share`` of the micro-batch's masked tokens."""
        return cls((result.loss.detach() * share).reshape(()), (result.unweighted_loss.detach() * share).reshape(()))


Backward = Callable[[torch.Tensor], None]


@dataclass(frozen=True)
class DataParallel:
    """Each rank: the core ``training_loss`` on its own samples (annealed mask while ratio < 1), with the
    block-diffusion loss under ``block_size`` (None: full-sequence diffusion)."""

    block_size: int | None = None

    def step(
        self, model: torch.nn.Module, samples: torch.Tensor, mask_id: int, generator: torch.Generator,
        anneal: float, backward: Backward,
    ) -> StepLoss:
        """Loss of one ``[batch, sample_tokens]`` micro-batch, noise drawn from ``generator``; calls ``backward`` on it."""
        result = training_loss(model, samples, mask_id, anneal=anneal, generator=generator, block_size=self.block_size)
        backward(result.loss)
        return StepLoss.of(result)


class SequenceParallel:
    """Noise on the whole sample, loss on this rank's shard, normalised over the SP group.

    Output ``i`` predicts token ``i + 1`` (shift), so targets are aligned to outputs before sharding;
    the last output has no target. Each rank back-propagates ``sp * (its weighted CE sum) / (masked
    tokens of the whole group)``: the engines average gradients over all ``dp * sp`` ranks, which turns
    that into the gradient of the full-sequence loss averaged over data-parallel replicas.
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.group = _consecutive_group(layout.world_size, layout.sp_size)
        self._mesh = None
        if layout.mode == "ring_attn":
            from torch.distributed.device_mesh import init_device_mesh

            self._mesh = init_device_mesh("cuda", (layout.dp_size, layout.sp_size), mesh_dim_names=("dp", "cp"))["cp"]

    def step(
        self, model: torch.nn.Module, samples: torch.Tensor, mask_id: int, generator: torch.Generator,
        anneal: float, backward: Backward,
    ) -> StepLoss:
        """As ``DataParallel.step``; ``anneal`` is always 1 here (``check_mode`` refuses annealing)."""
        t = sample_noise_level(samples.shape[0], device=samples.device, generator=generator)
        noisy, masked = corrupt(samples, t, mask_id, generator=generator)
        targets, scored = align_to_outputs(samples, True, 0), align_to_outputs(masked, True, False)
        positions = torch.arange(samples.shape[1], device=samples.device).expand_as(samples).contiguous()
        with self._shards([noisy, targets, scored, positions]) as (noisy, targets, scored, positions):
            logits = model(input_ids=noisy, position_ids=positions, use_cache=False).logits
            local = diffusion_loss(logits, targets, scored, t, shift=False)
            total_masked = local.num_masked.detach().clone()
            dist.all_reduce(total_masked, group=self.group)
            share = local.num_masked.float() / total_masked.clamp(min=1).float()
            backward(local.loss * share * self.layout.sp_size)
        shard = StepLoss.of(local, share)
        for value in (shard.loss, shard.unweighted_loss):
            dist.all_reduce(value, group=self.group)
        return shard

    @contextlib.contextmanager
    def _shards(self, tensors: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
        """This rank's pieces of ``[batch, length]`` tensors, for the forward and backward inside."""
        if self._mesh is None:
            width = tensors[0].shape[1] // self.layout.sp_size
            start = self.layout.sp_rank * width
            yield [tensor[:, start : start + width].contiguous() for tensor in tensors]
            return
        from torch.distributed.tensor.experimental import context_parallel

        buffers = [tensor.clone() for tensor in tensors]
        with context_parallel(self._mesh, buffers=buffers, buffer_seq_dims=[1] * len(buffers),
                              no_restore_buffers=set(buffers)):
            yield buffers


def _consecutive_group(world_size: int, sp_size: int) -> dist.ProcessGroup:
    """This rank's SP group; every rank must create every group, in the same order."""
    mine = None
    for start in range(0, world_size, sp_size):
        group = dist.new_group(list(range(start, start + sp_size)))
        if start <= dist.get_rank() < start + sp_size:
            mine = group
    return mine


ParallelPlan = DataParallel | SequenceParallel


def make_plan(layout: Layout, block_size: int | None = None) -> ParallelPlan:
    """The plan of the layout's mode: data parallelism (block diffusion under ``block_size``), or a
    sequence-parallel engine (full-sequence only: ``TrainSettings`` refuses a block size there)."""
    if layout.mode == "data_parallel":
        return DataParallel(block_size)
    return SequenceParallel(layout)
