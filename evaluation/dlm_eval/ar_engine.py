"""Autoregressive baselines as an evaluation engine, scored the way the paper scored them.

Multiple choice: the negated sum of the continuation's token log-probabilities under a causal forward
(lower is better, like the diffusion score). Generation: greedy decoding after the prefix; an infilling
hole is generated from the prefix alone, since a left-to-right model cannot see the suffix. Two options
serve comparisons with diffusion samples: ``sampling`` (follow a non-greedy decoding) and
``full_length=True`` (every hole runs its full length, as a diffusion hole does).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from tqdm import tqdm
from transformers import PreTrainedModel

from llamafactory.ddm import framing_tokens, generate_continuations
from llamafactory.errors import UserInputError

from .engine import Decoding, FillRequest, GenerationMeter, window
from .text import fit_infill, fit_pair


class AutoregressiveEngine:
    kind = "autoregressive"

    def __init__(self, model: PreTrainedModel, tokenizer: Any, *, batch_size: int = 32, sampling: bool = False,
                 full_length: bool = False) -> None:
        """``sampling``: ``fill`` samples when its decoding is not greedy (its temperature and top_p; torch's
        generator seeded by the first request of each batch) instead of always decoding greedily."""
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.sampling = sampling
        self.full_length = full_length
        self.decoding = Decoding(greedy=True, strategy="topk")
        self.meter = GenerationMeter()
        self.max_length = window(model.config)
        eos = tokenizer.eos_token_id
        self.eos_ids = frozenset({int(eos)} if eos is not None else set())
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        self._pad_id = int(pad) if pad is not None else 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def score(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *, steps: int, seed: int,
              desc: str, estimator: str = "original") -> list[float]:
        """``-log p(continuation | context)``; ``steps``, ``seed`` and ``estimator`` do not apply to an AR model."""
        fitted = [fit_pair(context, continuation, self.max_length) for context, continuation in pairs]
        scores = [0.0] * len(fitted)
        order = sorted(range(len(fitted)), key=lambda i: len(fitted[i][0]) + len(fitted[i][1]))
        with tqdm(total=len(fitted), desc=desc, unit="pair") as bar:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                width = max(len(fitted[i][0]) + len(fitted[i][1]) for i in chunk)
                ids = torch.full((len(chunk), width), self._pad_id, dtype=torch.long)
                keep = torch.zeros((len(chunk), width), dtype=torch.long)
                for b, i in enumerate(chunk):
                    row = fitted[i][0] + fitted[i][1]
                    ids[b, : len(row)] = torch.tensor(row)
                    keep[b, : len(row)] = 1
                logits = self.model(input_ids=ids.to(self.device), attention_mask=keep.to(self.device)).logits
                log_probs = logits.float().log_softmax(dim=-1).cpu()
                for b, i in enumerate(chunk):
                    context, continuation, _ = fitted[i]
                    positions = torch.arange(len(context) - 1, len(context) + len(continuation) - 1)
                    picked = log_probs[b, positions, torch.tensor(continuation)]
                    scores[i] = -float(picked.sum())
                bar.update(len(chunk))
        return scores

    def sequence_nll(self, sequences: Sequence[Sequence[int]], *, given: int, steps: int, seed: int,
                     desc: str) -> list[tuple[float, int]]:
        """The exact NLL of each sequence's tokens after its first ``given`` (``steps`` and ``seed`` do not apply)."""
        if given < 1:
            raise UserInputError(f"an AR model predicts a token from the ones before it: given must be >= 1, got {given}")
        longest = max((len(s) for s in sequences), default=0)
        if longest > self.max_length:
            raise UserInputError(f"a sequence of {longest} tokens exceeds the model's window of {self.max_length}")
        scores = self.score([(s[:given], s[given:]) for s in sequences], steps=steps, seed=seed, desc=desc)
        return [(score, len(s) - given) for score, s in zip(scores, sequences)]

    @torch.no_grad()
    def fill(self, requests: Sequence[FillRequest], decoding: Decoding, *, desc: str) -> list[list[int]]:
        """Continuation of each prefix, ``length`` tokens or until EOS; suffixes are not seen."""
        fitted = [fit_infill(r.prefix, r.length, [], self.max_length)[:2] for r in requests]
        holes: list[list[int]] = [[] for _ in requests]
        order = sorted((i for i in range(len(fitted)) if fitted[i][1] > 0),
                       key=lambda i: (fitted[i][1], len(fitted[i][0])))
        with tqdm(total=len(order), desc=desc, unit="example") as bar:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                if self._samples(decoding):
                    torch.manual_seed(requests[chunk[0]].seed)
                for i, hole in zip(chunk, self._generate_batch([fitted[i] for i in chunk], decoding)):
                    holes[i] = hole
                bar.update(len(chunk))
        return holes

    def _samples(self, decoding: Decoding) -> bool:
        """Whether ``fill`` samples under ``decoding`` (temperature 0 means argmax, as for the diffusion sampler)."""
        return self.sampling and not decoding.greedy and decoding.temperature > 0

    def _generate_batch(self, rows: list[tuple[list[int], int]], decoding: Decoding) -> list[list[int]]:
        """Generation of one batch; each row keeps its own length, cut at EOS unless ``full_length``.

        The batch generates as many tokens as its longest hole, so every prefix is fitted for that.
        """
        steps = max(n for _, n in rows)
        prompts = [fit_infill(prefix, steps, [], self.max_length)[0] for prefix, _ in rows]
        sample = self._samples(decoding)
        started = time.perf_counter()
        generated = generate_continuations(
            self.model, prompts, steps, pad_id=self._pad_id, eos_ids=() if self.full_length else self.eos_ids,
            do_sample=sample, temperature=decoding.temperature if sample else None,
            top_p=decoding.top_p if sample else None)
        self.meter.add(GenerationMeter(len(rows), sum(n for _, n in rows), steps * len(rows),
                                       time.perf_counter() - started))
        return [hole[:length] for hole, (_, length) in zip(generated, rows)]

    def supervised_prompt(self, prompt: Sequence[int]) -> list[int]:
        """``[BOS] + prompt``: the sft stage's layout (``template: empty``); the answer follows."""
        return [framing_tokens(self.tokenizer).bos, *prompt]
