"""The optimisation loop of train.py: steps, logs, validation, checkpoints and the final model.

Everything that varies per step is a function of the step number (learning rate, annealing ratio,
noise seed, data position), so a run resumed from ``checkpoint-<step>`` repeats the uninterrupted one.
"""

from __future__ import annotations

import argparse
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
from .parallel import DataParallel, Layout, SequenceParallel
from .throughput import ThroughputMeter

logger = logging.getLogger("train")

_SHOWN = ("loss", "val_loss", "lr", "tokens_per_s", "mfu")


def learning_rate(step: int, args: argparse.Namespace) -> float:
    """Constant learning rate after a linear warm-up over ``--warmup-steps`` optimizer steps."""
    if args.warmup_steps == 0:
        return args.learning_rate
    return args.learning_rate * min(1.0, (step + 1) / args.warmup_steps)


def train_batches(stream: Any, start_sample: int, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """``[batch, block]`` int64 batches from the rank's stream, starting at ``start_sample``."""
    blocks = stream.iterate(start_sample)
    while True:
        batch = torch.from_numpy(np.stack([next(blocks) for _ in range(batch_size)]))
        yield batch.to(device, non_blocking=True)


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

    args: argparse.Namespace
    accelerator: Accelerator
    model: Any
    optimizer: Any
    strategy: DataParallel | SequenceParallel
    layout: Layout
    tokens: SpecialTokens
    run_state: dict[str, Any]
    batches: Iterator[torch.Tensor]
    val_blocks: list[list[int]]
    meter: ThroughputMeter

    def train(self, start_step: int) -> None:
        """Optimizer steps ``start_step .. --max-train-steps``, with logs, validation and checkpoints."""
        args, output_dir = self.args, Path(self.args.output_dir)
        log = RunLog(self.accelerator, output_dir, args.max_train_steps, start_step)
        tokens_per_step = args.batch_size * args.gradient_accumulate_every * self.layout.dp_size * (args.seq_length + 1)
        sums = torch.zeros(3, dtype=torch.float64, device=self.accelerator.device)  # loss, unweighted, micro-steps
        if self.val_blocks and start_step == 0:
            log.write({"step": 0, "val_loss": self.evaluate()})
        if start_step >= args.max_train_steps:
            logger.info("the checkpoint is at step %d, --max-train-steps is %d: nothing to train", start_step,
                        args.max_train_steps)
        try:  # closed on errors too, so that an error line starts on a line of its own
            for step in range(start_step, args.max_train_steps):
                grad_norm = self.optimizer_step(step, sums)
                self.meter.add(tokens_per_step)
                log.bar.update(1)
                self.after_step(step, grad_norm, sums, log)
        finally:
            log.bar.close()

    def after_step(self, step: int, grad_norm: float, sums: torch.Tensor, log: RunLog) -> None:
        """Log, validate and save as the step count asks."""
        args, done = self.args, step + 1
        last = done == args.max_train_steps
        if done % args.log_every == 0 or last:
            averaged = self.accelerator.reduce(sums, reduction="mean")
            log.write({"step": done, "loss": float(averaged[0] / averaged[2]),
                       "unweighted_loss": float(averaged[1] / averaged[2]), "grad_norm": grad_norm,
                       "lr": learning_rate(step, args), "anneal_ratio": self.anneal(step), **self.meter.report()})
            sums.zero_()
        if self.val_blocks and (done % args.eval_every == 0 or last):
            log.write({"step": done, "val_loss": self.evaluate()})
        if done % args.save_every == 0 or last:
            save_checkpoint(self.accelerator, Path(args.output_dir), {**self.run_state, "step": done},
                            args.keep_checkpoints)

    def anneal(self, step: int) -> float:
        return anneal_ratio(step, self.args.anneal_steps) if self.args.anneal_steps else 1.0

    def optimizer_step(self, step: int, sums: torch.Tensor) -> float:
        """One optimizer step over ``--gradient-accumulate-every`` micro-batches; returns the gradient norm."""
        args, accelerator = self.args, self.accelerator
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        generator = torch.Generator(accelerator.device)
        grad_norm = float("nan")
        for micro_step in range(args.gradient_accumulate_every):
            generator.manual_seed(noise_seed(args.seed, step, micro_step, self.layout.dp_rank,
                                                 self.layout.dp_size))
            with accelerator.accumulate(self.model):
                result = self.strategy.step(self.model, next(self.batches), self.tokens.mask_id, generator,
                                            self.anneal(step), accelerator.backward)
                if accelerator.sync_gradients:  # DeepSpeed clips inside its step and reports the norm here
                    norm = accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                    grad_norm = float("nan") if norm is None else float(norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
            sums += torch.stack([result.loss.double(), result.unweighted_loss.double(), torch.ones_like(sums[0])])
        return grad_norm

    def evaluate(self) -> float:
        """Validation NLL per token (nats): the core's deterministic ELBO estimate, summed over ranks."""
        accelerator, args = self.accelerator, self.args
        self.model.eval()
        denoiser = DiffusionLM(accelerator.unwrap_model(self.model), self.tokens)
        with torch.no_grad(), accelerator.autocast():
            results = sequence_nll(denoiser, self.val_blocks, steps=args.eval_diffusion_steps, seed=args.seed,
                                   batch_size=args.eval_batch_size)
        self.model.train()
        return nll_per_token(accelerator.reduce(nll_totals(results, accelerator.device), reduction="sum"))

    def save_final_model(self, tokenizer: Any | None) -> Path:
        """Write the model into ``<output-dir>`` (where the original wrote it) in the released LLaMA layout.

        The config records the sampling length and the mask id (so the model also loads without tokenizer
        files). It is staged whole first and then moved in file by file, ``config.json`` last.
        """
        output_dir = Path(self.args.output_dir)
        staging = output_dir / ".final-model.partial"
        unwrapped = self.accelerator.unwrap_model(self.model)
        self.accelerator.wait_for_everyone()
        with storage_errors(f"the final model to {output_dir}", kept="the checkpoints are intact"), \
                full_parameters(self.accelerator, unwrapped):
            if self.accelerator.is_main_process:
                record_mask_id(unwrapped.config, self.tokens.mask_id)
                save_diffusion_checkpoint(unwrapped, staging, tokenizer=tokenizer,
                                          generation_length=self.args.seq_length)
                publish_model(staging, output_dir)
        self.accelerator.wait_for_everyone()
        return output_dir
