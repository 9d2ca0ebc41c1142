"""The optimisation loop of train.py: steps, logs, validation, checkpoints and the final model.

Everything that varies per step is a function of the step number (learning rate, annealing ratio,
noise seed, data position), so a run resumed from ``checkpoint-<step>`` repeats the uninterrupted one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from tqdm import tqdm

from llamafactory.ddm import (
    DiffusionLM,
    SpecialTokens,
    anneal_ratio,
    nll_per_token,
    nll_totals,
    noise_seed,
    record_mask_id,
    save_diffusion_checkpoint,
    sequence_nll,
)
from llamafactory.utils.files import publish_model, storage_errors

from .checkpointing import LOG_FILE, save_checkpoint
from .deepspeed_support import full_parameters
from .parallel import Layout, ParallelPlan, StepLoss
from .settings import TrainSettings
from .throughput import ThroughputMeter

logger = logging.getLogger("train")

_SHOWN = ("loss", "val_loss", "lr", "tokens_per_s", "mfu")


def train_batches(stream: Any, start_sample: int, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """``[batch, sample_tokens]`` int64 batches from the rank's stream, starting at ``start_sample``."""
    samples = stream.iterate(start_sample)
    while True:
        batch = torch.from_numpy(np.stack([next(samples) for _ in range(batch_size)]))
        yield batch.to(device, non_blocking=True)


class LossTotals:
    """This rank's sums of the micro-batches' losses since the last log, averaged over ranks when read."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, unweighted, micro-batches

    def add(self, step: StepLoss) -> None:
        self.sums += torch.stack([step.loss.double(), step.unweighted_loss.double(), torch.ones_like(self.sums[0])])

    def read(self, accelerator: Accelerator) -> dict[str, float]:
        """The mean losses over micro-batches and ranks (collective); the sums start again from zero."""
        averaged = accelerator.reduce(self.sums, reduction="mean")
        self.sums.zero_()
        return {"loss": float(averaged[0] / averaged[2]), "unweighted_loss": float(averaged[1] / averaged[2])}


class RunLog:
    """Records as JSON lines in ``<output-dir>/train_log.jsonl``, to the trackers and on the progress bar."""

    def __init__(self, accelerator: Accelerator, output_dir: Path, total: int, initial: int) -> None:
        self.accelerator = accelerator
        self.path = output_dir / LOG_FILE
        self.bar = tqdm(total=total, initial=initial, desc="training", dynamic_ncols=True,
                        disable=not accelerator.is_main_process)

    def write(self, record: dict[str, float]) -> None:
        self.accelerator.log(record, step=int(record["step"]))
        if self.accelerator.is_main_process:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            shown = {k: f"{v:.4g}" for k, v in record.items() if k in _SHOWN}
            self.bar.set_postfix(shown)
            logger.info("step %d: %s", record["step"], ", ".join(f"{k}={v}" for k, v in shown.items()))


@dataclass
class Trainer:
    """A prepared model, optimizer and data stream, trained step by step."""

    settings: TrainSettings
    accelerator: Accelerator
    model: Any
    optimizer: Any
    plan: ParallelPlan
    layout: Layout
    tokens: SpecialTokens
    run_state: dict[str, Any]
    batches: Iterator[torch.Tensor]
    val_blocks: list[list[int]]
    meter: ThroughputMeter

    def train(self, start_step: int) -> None:
        """Optimizer steps ``start_step .. --max-train-steps``, with logs, validation and checkpoints."""
        settings = self.settings
        log = RunLog(self.accelerator, settings.output_dir, settings.max_train_steps, start_step)
        tokens_per_step = settings.tokens_per_step(self.layout.dp_size)
        totals = LossTotals(self.accelerator.device)
        if self.val_blocks and start_step == 0:
            log.write({"step": 0, "val_loss": self.evaluate()})
        if start_step >= settings.max_train_steps:
            logger.info("the checkpoint is at step %d, --max-train-steps is %d: nothing to train", start_step,
                        settings.max_train_steps)
        try:  # closed on errors too, so that an error line starts on a line of its own
            for step in range(start_step, settings.max_train_steps):
                grad_norm = self.optimizer_step(step, totals)
                self.meter.add(tokens_per_step)
                log.bar.update(1)
                self.after_step(step, grad_norm, totals, log)
        finally:
            log.bar.close()

    def after_step(self, step: int, grad_norm: float, totals: LossTotals, log: RunLog) -> None:
        """Log, validate and save as the step count asks."""
        settings, done = self.settings, step + 1
        last = done == settings.max_train_steps
        if done % settings.log_every == 0 or last:
            log.write({"step": done, **totals.read(self.accelerator), "grad_norm": grad_norm,
                       "lr": settings.learning_rate_at(step), "anneal_ratio": self.anneal(step),
                       **self.meter.report()})
        if self.val_blocks and (done % settings.eval_every == 0 or last):
            log.write({"step": done, "val_loss": self.evaluate()})
        if done % settings.save_every == 0 or last:
            save_checkpoint(self.accelerator, settings.output_dir, {**self.run_state, "step": done},
                            settings.keep_checkpoints)

    def anneal(self, step: int) -> float:
        return anneal_ratio(step, self.settings.anneal_steps)

    def optimizer_step(self, step: int, totals: LossTotals) -> float:
        """One optimizer step over ``--gradient-accumulate-every`` micro-batches; returns the gradient norm."""
        settings, accelerator = self.settings, self.accelerator
        for group in self.optimizer.param_groups:
            group["lr"] = settings.learning_rate_at(step)
        generator = torch.Generator(accelerator.device)
        grad_norm = float("nan")
        for micro_step in range(settings.gradient_accumulate_every):
            generator.manual_seed(noise_seed(settings.seed, step, micro_step, self.layout.dp_rank,
                                             self.layout.dp_size))
            with accelerator.accumulate(self.model):
                result = self.plan.step(self.model, next(self.batches), self.tokens.mask_id, generator,
                                        self.anneal(step), accelerator.backward)
                if accelerator.sync_gradients:  # DeepSpeed clips inside its step and reports the norm here
                    norm = accelerator.clip_grad_norm_(self.model.parameters(), settings.max_grad_norm)
                    grad_norm = float("nan") if norm is None else float(norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
            totals.add(result)
        return grad_norm

    def evaluate(self) -> float:
        """Validation NLL per token (nats): the core's deterministic ELBO estimate (the block bound under a block
        size), summed over ranks."""
        accelerator, settings = self.accelerator, self.settings
        self.model.eval()
        denoiser = DiffusionLM(accelerator.unwrap_model(self.model), self.tokens, block_size=settings.block_size)
        with torch.no_grad(), accelerator.autocast():
            results = sequence_nll(denoiser, self.val_blocks, steps=settings.eval_diffusion_steps, seed=settings.seed,
                                   batch_size=settings.eval_batch_size)
        self.model.train()
        return nll_per_token(accelerator.reduce(nll_totals(results, accelerator.device), reduction="sum"))

    def save_final_model(self, tokenizer: Any | None) -> Path:
        """Write the model into ``<output-dir>`` (where the original wrote it) in the released LLaMA layout.

        The config records the sampling length, the mask id (so the model also loads without tokenizer
        files) and the block size of a block-diffusion run (so every loader builds a block model). It is
        staged whole first and then moved in file by file, ``config.json`` last.
        """
        output_dir = self.settings.output_dir
        staging = output_dir / ".final-model.partial"
        unwrapped = self.accelerator.unwrap_model(self.model)
        self.accelerator.wait_for_everyone()
        with storage_errors(f"the final model to {output_dir}", kept="the checkpoints are intact"), \
                full_parameters(self.accelerator, unwrapped):
            if self.accelerator.is_main_process:
                record_mask_id(unwrapped.config, self.tokens.mask_id)
                save_diffusion_checkpoint(unwrapped, staging, tokenizer=tokenizer,
                                          generation_length=self.settings.seq_length,
                                          block_size=self.settings.block_size)
                publish_model(staging, output_dir)
        self.accelerator.wait_for_everyone()
        return output_dir
