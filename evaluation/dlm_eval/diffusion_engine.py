"""Diffusion LMs as an evaluation engine: the core likelihood scorer and the core reverse-diffusion sampler.

Scoring batches every (example, choice, noise level) row at once through ``score_continuations``.
Filling batches requests of equal ``steps``; rows are right-padded with padding hidden from attention and
never generated (the core sampler aligns rows on their first generated column when blocks or a cache need
it), and each row samples from its own generator, so a row's tokens do not depend on the batch size or on
what else is in its batch.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from tqdm import tqdm

from llamafactory.ddm import DiffusionLM, SamplingConfig, framing_tokens, sample, score_continuations, sequence_nll

from .engine import Decoding, FillRequest, GenerationMeter, window
from .text import fit_infill, fit_pair


class DiffusionEngine:
    kind = "diffusion"

    def __init__(self, model: DiffusionLM, tokenizer: Any, *, batch_size: int = 32,
                 decoding: Decoding | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.decoding = decoding if decoding is not None else Decoding()
        self.meter = GenerationMeter()
        self.max_length = window(model.config)
        tokens = model.tokens
        self.eos_ids = tokens.end_ids
        self._pad_id = next((i for i in (tokens.pad_id, tokens.eos_id) if i is not None), tokens.mask_id)

    def score(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *, steps: int, seed: int,
              desc: str, estimator: str = "original") -> list[float]:
        fitted = [fit_pair(context, continuation, self.max_length) for context, continuation in pairs]
        with tqdm(total=len(fitted) * steps, desc=desc, unit="row") as bar:
            return score_continuations(
                self.model, [c for c, _, _ in fitted], [x for _, x, _ in fitted], steps=steps, seed=seed,
                estimator=estimator, batch_size=self.batch_size, progress=bar.update,
            )

    def sequence_nll(self, sequences: Sequence[Sequence[int]], *, given: int, steps: int, seed: int,
                     desc: str) -> list[tuple[float, int]]:
        """The core's ELBO bound of each sequence's NLL beyond its first ``given`` tokens (an upper bound)."""
        with tqdm(total=len(sequences) * steps, desc=desc, unit="row") as bar:
            return sequence_nll(self.model, sequences, steps=steps, seed=seed, batch_size=self.batch_size,
                                prompt_lengths=[given] * len(sequences), progress=bar.update)

    def fill(self, requests: Sequence[FillRequest], decoding: Decoding, *, desc: str) -> list[list[int]]:
        fitted = [fit_infill(r.prefix, r.length, r.suffix, self.max_length) for r in requests]
        groups: dict[int, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            if fitted[index][1] > 0:
                groups[request.steps].append(index)
        holes: list[list[int]] = [[] for _ in requests]
        total = sum(steps * -(-len(members) // self.batch_size) for steps, members in groups.items())
        with tqdm(total=total, desc=desc, unit="step") as bar:
            for steps, members in sorted(groups.items()):
                config = replace(decoding, steps=steps, shift=self.model.shift)
                config.validate()
                members = sorted(members, key=lambda i: len(fitted[i][0]) + fitted[i][1] + len(fitted[i][2]))
                for start in range(0, len(members), self.batch_size):
                    chunk = members[start : start + self.batch_size]
                    rows = [fitted[i] for i in chunk]
                    seeds = [requests[i].seed for i in chunk]
                    for i, hole in zip(chunk, self._fill_batch(rows, seeds, config, bar.update)):
                        holes[i] = hole
        return holes

    def _fill_batch(self, rows, seeds: list[int], config: SamplingConfig, progress) -> list[list[int]]:
        """Sample one padded batch of ``(prefix, length, suffix, cut)`` rows; returns each row's hole."""
        device = self.model.device
        width = max(len(prefix) + length + len(suffix) for prefix, length, suffix, _ in rows)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        given = torch.ones((len(rows), width), dtype=torch.bool)
        keep = torch.zeros((len(rows), width), dtype=torch.long)
        for b, (prefix, length, suffix, _) in enumerate(rows):
            end = len(prefix) + length + len(suffix)
            ids[b, :end] = torch.tensor(list(prefix) + [self.model.mask_id] * length + list(suffix))
            given[b, len(prefix) : len(prefix) + length] = False
            keep[b, :end] = 1
        attention = None if bool(keep.all()) else keep.to(device)
        generators = [torch.Generator(device).manual_seed(seed) for seed in seeds]
        started = time.perf_counter()
        output = sample(self.model, ids.to(device), self.model.mask_id, config, src_mask=given.to(device),
                        attention_mask=attention, generator=generators, progress=progress)
        tokens = output.tokens.cpu()
        self.meter.add(GenerationMeter(len(rows), sum(length for _, length, _, _ in rows),
                                       int(output.nfe.sum()), time.perf_counter() - started))
        return [tokens[b, len(p) : len(p) + n].tolist() for b, (p, n, _, _) in enumerate(rows)]

    def supervised_prompt(self, prompt: Sequence[int]) -> list[int]:
        """``[BOS] + prompt + [SEP]``: the ddm-sft layout (docs/design.md#supervised-fine-tuning-layout-ddm-sft), framed as the training stage frames it."""
        framing = framing_tokens(self.tokenizer, self.model.tokens)
        return [framing.bos, *prompt, framing.sep]
