"""The Trainer of the diffusion stages: the core loss, attention annealing, reproducible noise, ELBO eval.

* ``compute_loss`` is ``llamafactory.ddm.training_loss`` with ``anneal = anneal_ratio(global_step, anneal_steps)``;
  after annealing no mask tensor is built at all. With ``block_size`` it is the block-diffusion loss
  (docs/design.md#block-diffusion); the collator's padding (unpacked ``ddm`` rows) is then hidden.
* The noise of every micro-batch comes from a generator seeded by (seed, optimiser step, micro-batch,
  process), so a run resumed from a checkpoint draws exactly the noise the uninterrupted run would have.
* Logs add ``unweighted_loss`` (masked CE without the 1/t weights) and ``anneal_ratio``.
* checkpoints appear only when complete (``train/checkpoints.py``); a LoRA adapter trained with
  ``block_size`` keeps it in its folder (``diffusion_config.json``), as a full model's config.json does.
* ``evaluate`` reports the deterministic ELBO estimate of ``llamafactory.ddm.sequence_nll`` over
  ``diffusion_steps`` levels (the block bound under ``block_size``): ``eval_loss`` (nats per scored token) and ``eval_perplexity``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from datasets import IterableDataset
from tqdm import tqdm
from transformers import Seq2SeqTrainer
from transformers.integrations import is_deepspeed_zero3_enabled

from ...ddm import (
    DiffusionLM,
    SpecialTokens,
    anneal_ratio,
    is_adapter_dir,
    nll_per_token,
    nll_totals,
    noise_seed,
    record_adapter_block_size,
    sequence_nll,
    training_loss,
)
from ...hparams import FinetuningArguments
from ..checkpoints import AtomicCheckpoints
from ..trainer_utils import perplexity

logger = logging.getLogger(__name__)


class DiffusionTrainer(AtomicCheckpoints, Seq2SeqTrainer):
    """Seq2SeqTrainer whose loss, logging and evaluation are those of a masked diffusion LM."""

    loss_is_scaled_for_ga = False  # the loss is a per-micro-batch mean; the Trainer divides by accumulation

    def __init__(self, *args: Any, special_tokens: SpecialTokens, finetuning_args: FinetuningArguments,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.special_tokens = special_tokens
        self.finetuning_args = finetuning_args
        self._noise_step, self._micro_batch = -1, 0
        self._unweighted_sum: torch.Tensor | None = None
        self._unweighted_count = 0
        self._last_ratio = 1.0

    def current_anneal_ratio(self) -> float:
        return anneal_ratio(self.state.global_step, self.finetuning_args.anneal_steps)

    def _noise_generator(self, device: torch.device) -> torch.Generator:
        step = self.state.global_step
        self._micro_batch = self._micro_batch + 1 if step == self._noise_step else 0
        self._noise_step = step
        seed = noise_seed(self.args.seed, step, self._micro_batch, self.args.process_index, self.args.world_size)
        return torch.Generator(device=device).manual_seed(seed)

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> torch.Tensor | tuple[torch.Tensor, None]:
        ratio = self.current_anneal_ratio()
        input_ids = inputs["input_ids"]
        result = training_loss(
            model, input_ids, self.special_tokens.mask_id, src_mask=inputs.get("src_mask"),
            shift=self.finetuning_args.shift, anneal=ratio, generator=self._noise_generator(input_ids.device),
            block_size=self.finetuning_args.block_size, attention_mask=self._collator_padding(inputs),
        )
        if model.training:
            detached = result.unweighted_loss.detach()
            self._unweighted_sum = detached if self._unweighted_sum is None else self._unweighted_sum + detached
            self._unweighted_count += 1
            self._last_ratio = ratio
        return (result.loss, None) if return_outputs else result.loss

    def _collator_padding(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The batch's 2D padding mask under a block size when the collator padded a row, else None.

        ddm-sft rows are ``cutoff_len`` long with their PAD tokens as targets, packed rows have no padding: both
        attend to every column as without a block size. Only unpacked ``ddm`` rows of unequal length get
        collator padding, which a block size hides from attention, noise and loss (docs/design.md#block-diffusion).
        """
        padding = inputs.get("attention_mask")
        if self.finetuning_args.block_size is None or padding is None or bool(padding.all()):
            return None
        return padding

    def _save(self, output_dir: str | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        super()._save(output_dir, state_dict)
        directory = Path(output_dir if output_dir is not None else self.args.output_dir)
        if is_adapter_dir(directory):
            record_adapter_block_size(directory, self.finetuning_args.block_size)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._unweighted_sum is not None:
            # every process logs the training loss at the same step, so the gather below is collective
            mean = self._unweighted_sum / self._unweighted_count
            logs["unweighted_loss"] = self.accelerator.gather(mean.reshape(1)).mean().item()
            logs["anneal_ratio"] = self._last_ratio
            self._unweighted_sum, self._unweighted_count = None, 0
        super().log(logs, start_time)

    def diffusion_model(self) -> DiffusionLM:
        """The trained model as a denoiser (bidirectional, shift and block size as configured), on the training device."""
        model = self.model
        if not is_deepspeed_zero3_enabled() and next(model.parameters()).device != self.args.device:
            model = model.to(self.args.device)
        return DiffusionLM(model, self.special_tokens, shift=self.finetuning_args.shift,
                           block_size=self.finetuning_args.block_size).eval()

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(dataset, IterableDataset):  # a streamed held-out set is small (val_size records): list it
            dataset = list(dataset)
        start = time.time()
        world, rank = self.args.world_size, self.args.process_index
        # ZeRO-3 shards the weights: every process must run the same forwards, so each scores everything
        indices = range(len(dataset)) if is_deepspeed_zero3_enabled() else range(rank, len(dataset), world)
        sequences, prompt_lengths = [], []
        for i in indices:
            record = dataset[i]
            sequences.append(list(record["input_ids"]))
            prompt_lengths.append(int(sum(record["src_mask"])) if "src_mask" in record else 0)
        steps = self.finetuning_args.diffusion_steps
        with tqdm(total=len(sequences) * steps, desc="ELBO", disable=not self.is_local_process_zero()) as bar, \
                self.accelerator.autocast():
            scores = sequence_nll(
                self.diffusion_model(), sequences, steps=steps, seed=self.args.seed,
                batch_size=self.args.per_device_eval_batch_size, prompt_lengths=prompt_lengths, progress=bar.update,
            )
        totals = nll_totals(scores, self.args.device)
        if world > 1 and not is_deepspeed_zero3_enabled():
            totals = self.accelerator.reduce(totals, reduction="sum")
        loss = nll_per_token(totals)
        metrics = {
            f"{metric_key_prefix}_loss": loss,
            f"{metric_key_prefix}_perplexity": perplexity(loss),
            f"{metric_key_prefix}_runtime": round(time.time() - start, 4),
        }
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics
