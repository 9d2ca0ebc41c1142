"""Measure one model of the mini-paper pipeline on the held-out documents; write its results as JSON.

For a diffusion model (``--diffusion DIR``, with the ``--shift`` it was trained with):

* the ELBO bound of the NLL (``llamafactory.ddm.sequence_nll``, ``--levels`` fixed noise levels, the run
  seed) on held-out windows packed as in training — an upper bound on the true NLL;
* masked-span infilling: ``--span-words`` whole words in the middle of a held-out sentence, filled
  greedily, most-confident-first, one reverse step per token, with ``--context`` tokens given on each side;
* generation quality at each T of ``--steps`` and under the threshold rule (``threshold``: at most one step
  per token, every position at least 0.9 confident fixed at once): ``--samples`` unconditional sequences
  (from the record separator) and as many continuations of held-out prefixes, scored by generative
  perplexity under the AR model ``--ar`` and unigram entropy (nats; repetition lowers it), with the NFE per
  generated token and tokens per second of each cell.

A block-diffusion model (``block_size`` in its config) decodes block by block with its exact cache; it
is measured at one step per token and under the threshold rule only (fewer steps than blocks do not
exist for it), and not on infilling: its blocks never see right context beyond the current block.

Without ``--diffusion`` the AR model itself is measured the same way: exact NLL, infilling given the
prefix only (it cannot see the suffix), and left-to-right samples with the same sampler settings;
the held-out text itself is scored as the reference for generation; its samples come from transformers'
cached ``generate``.

Every measurement goes through the evaluation's engines (``dlm_eval``: the core's ELBO, sampler and AR
decoder). Diffusion samples draw from per-row generators seeded by (``--seed``, condition, row), so every
diffusion model samples with the same seeds; the AR samples draw from one generator seeded by the first row's seed.

    python measure.py --ar output/mini-paper/pt --name ar --init init --data output/mini-paper/data --out eval/ar.json
    python measure.py --ar output/mini-paper/pt --diffusion output/mini-paper/ddm-adapted --shift true \\
        --anneal-steps 200 --name ddm-adapted --init pt --data output/mini-paper/data --out eval/ddm-adapted.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dlm_eval import AutoregressiveEngine, Decoding, DiffusionEngine, FillRequest
from dlm_eval.engine import Engine, GenerationMeter
from dlm_eval.spans import Span, exact_matches, fill_spans, parse_steps, token_accuracy
from dlm_eval.text import encode
from llamafactory.data.processors import pretrain_batch
from llamafactory.ddm import framing_tokens, load_diffusion_lm, nll_totals
from llamafactory.entry_points import parse_bool, run_command
from llamafactory.errors import UserInputError
from llamafactory.utils.files import atomic_write_text

logger = logging.getLogger(__name__)

# The generation sampler, pinned here rather than left to defaults: plain ancestral sampling from each
# model's distribution (no temperature, no nucleus), as generative perplexity is usually measured, so
# that it scores the models rather than a truncation of them; random unmasking order (DiffuGPT's default).
SAMPLER = {"strategy": "random", "temperature": 1.0, "top_p": None, "greedy": False}
# The parallel cell: the same draws, the threshold rule at T = n (an upper bound) instead of the random order.
THRESHOLD = {**SAMPLER, "strategy": "threshold", "threshold": 0.9}
# Infilling: greedy, most confident first, one reverse step per token.
INFILL = Decoding(strategy="topk", temperature=1.0, top_p=None, greedy=True)
CONDITIONS = ("unconditional", "prefix")
SENTENCE = re.compile(r"[^.!?]+[.!?]")
WORD = re.compile(r"\S+")
PLAIN_WORD = re.compile(r"[A-Za-z][A-Za-z']*")


def read_documents(path: Path) -> list[str]:
    if not path.is_file():
        raise UserInputError(f"held-out documents {path} do not exist; run prepare_text.py first")
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def heldout_windows(tokenizer: Any, documents: list[str], length: int) -> list[list[int]]:
    """The held-out documents packed exactly as the training stages pack text (each + EOS, cut every ``length``)."""
    packed = pretrain_batch({"text": documents}, tokenizer=tokenizer, tokens=framing_tokens(tokenizer),
                            cutoff_len=length, packing=True)
    return packed["input_ids"]


def row_seed(seed: int, condition: int, row: int) -> int:
    """The generator seed of one sampled row: the same for every model, distinct per condition and row."""
    return (seed * 1_000 + condition) * 100_000 + row


def unigram_entropy(tokens: Sequence[int]) -> float:
    """Entropy (nats) of the token frequencies of one sequence."""
    counts = Counter(tokens)
    size = len(tokens)
    return -sum(c / size * math.log(c / size) for c in counts.values())


def summed_nll(engine: Engine, sequences: list[list[int]], given: int, *, steps: int = 1, seed: int = 0,
               desc: str) -> tuple[float, int]:
    """The NLL (nats) of the sequences' tokens after their first ``given``, summed, and their count."""
    totals = nll_totals(engine.sequence_nll(sequences, given=given, steps=steps, seed=seed, desc=desc)).tolist()
    return totals[0], int(totals[1])


def likelihood(engine: Engine, windows: list[list[int]], args: argparse.Namespace) -> dict[str, Any]:
    """NLL per token of the windows after their first token: exact for an AR model, the ELBO bound (``--levels``
    noise levels, the run seed) for a diffusion model."""
    nll, count = summed_nll(engine, windows, 1, steps=args.levels, seed=args.seed, desc="NLL")
    return {"nll": nll / count, "perplexity": math.exp(nll / count), "tokens": count,
            "bound": engine.kind == "diffusion"}


def generation_quality(judge: Engine, prompts: list[list[int]], generated: list[list[int]]) -> dict[str, float]:
    """Generative perplexity of the generated tokens under ``judge`` (given their prompt) and mean unigram entropy."""
    nll, count = summed_nll(judge, [p + g for p, g in zip(prompts, generated)], len(prompts[0]), desc="gen ppl")
    return {"gen_ppl": math.exp(nll / count),
            "entropy": sum(unigram_entropy(g) for g in generated) / len(generated)}


@dataclass(frozen=True)
class GenerationTask:
    """Prompts (equal lengths) to continue to ``length`` tokens in all, under one condition."""

    condition: str
    prompts: list[list[int]]
    length: int

    @property
    def new_tokens(self) -> int:
        return self.length - len(self.prompts[0])


def generation_tasks(windows: list[list[int]], eos_id: int, samples: int, prompt_tokens: int) -> list[GenerationTask]:
    """Unconditional rows start from the record separator (EOS); prefix rows from the first held-out windows."""
    if len(windows) < samples:
        raise UserInputError(f"the held-out text gives {len(windows)} windows, fewer than --samples {samples}")
    length = len(windows[0])
    return [GenerationTask("unconditional", [[eos_id]] * samples, length),
            GenerationTask("prefix", [w[:prompt_tokens] for w in windows[:samples]], length)]


def reference_text(task: GenerationTask, windows: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
    """The held-out text in the task's shape: (prompt, real continuation) of as many windows as the task has
    rows; unconditional rows are given the window's first token."""
    cut = 1 if task.condition == "unconditional" else len(task.prompts[0])
    rows = windows[: len(task.prompts)]
    return [w[:cut] for w in rows], [w[cut:] for w in rows]


def samples(engine: Engine, task: GenerationTask, seed: int, steps: int | None = None,
            sampler: dict[str, Any] = SAMPLER) -> list[list[int]]:
    """The tokens after each prompt, sampled with ``sampler`` (no early stop); a diffusion engine takes
    ``steps`` reverse steps (None: one per generated token)."""
    condition = CONDITIONS.index(task.condition)
    requests = [FillRequest(prompt, task.new_tokens, steps=steps or task.new_tokens,
                            seed=row_seed(seed, condition, row)) for row, prompt in enumerate(task.prompts)]
    return engine.fill(requests, Decoding(**sampler), desc=f"{task.condition} T={steps or 'n'} {sampler['strategy']}")


def timed_samples(engine: Engine, task: GenerationTask, seed: int, steps: int | None = None,
                  sampler: dict[str, Any] = SAMPLER) -> tuple[list[list[int]], dict[str, float]]:
    """``samples`` and what they cost: generated tokens, seconds, model calls (the engine's meter)."""
    before = GenerationMeter()
    before.add(engine.meter)
    generated = samples(engine, task, seed, steps, sampler)
    meter = engine.meter
    cost = {"tokens": meter.tokens - before.tokens, "seconds": meter.seconds - before.seconds,
            "nfe": meter.evaluations - before.evaluations}
    return generated, cost


def sentence_spans(text: str, span_words: int) -> list[list[tuple[int, int]]]:
    """For each sentence, the character ranges of ``span_words`` consecutive plain words on one line that
    have at least two words of the sentence on each side and a space (not a line break) before and after."""
    sentences = []
    for sentence in SENTENCE.finditer(text):
        words = [(m.start() + sentence.start(), m.end() + sentence.start(), m.group())
                 for m in WORD.finditer(sentence.group())]
        spans = []
        for first in range(2, len(words) - span_words - 1):
            chosen = words[first : first + span_words]
            start, end = chosen[0][0], chosen[-1][1]
            on_one_line = "\n" not in text[start:end] and text[start - 1] == " " and text[end] == " "
            if on_one_line and all(PLAIN_WORD.fullmatch(w) for _, _, w in chosen):
                spans.append((start, end))
        if spans:
            sentences.append(spans)
    return sentences


def infill_examples(tokenizer: Any, documents: list[str], count: int, span_words: int, context: int,
                    seed: int) -> list[Span]:
    """``count`` spans from distinct held-out sentences, each with up to ``context`` tokens on either side.

    The text before the span, the span and the text after it are tokenised apart at spaces, which is
    where the byte-level BPE splits anyway, so the three pieces are the tokens of the whole text.
    """
    eos = tokenizer.eos_token_id
    candidates = [(d, spans) for d, document in enumerate(documents) for spans in sentence_spans(document, span_words)]
    if len(candidates) < count:
        raise UserInputError(f"the held-out text has {len(candidates)} sentences with a {span_words}-word middle span, "
                             f"fewer than --spans {count}")
    rng = random.Random(seed)
    picked = sorted((d, rng.choice(spans)) for d, spans in rng.sample(candidates, count))
    examples = []
    for d, (start, end) in picked:
        text = documents[d]
        before = (eos, *encode(tokenizer, text[:start].rstrip(" ")))
        after = (*encode(tokenizer, text[end:]), eos)
        examples.append(Span("middle", before[-context:], tuple(encode(tokenizer, text[start:end])), after[:context]))
    return examples


def infilling(engine: Engine, spans: list[Span], eos_id: int) -> dict[str, float]:
    """Token accuracy (position by position) and exact match of the greedily filled spans, in percent."""
    outputs = fill_spans(engine, spans, INFILL, steps=None, desc=f"{engine.kind} infilling")
    hits = exact_matches(outputs, spans, eos_id)
    return {"token_accuracy": token_accuracy(outputs, spans), "exact_match": 100.0 * sum(hits) / len(hits),
            "spans": len(spans), "tokens": sum(len(span.target) for span in spans)}


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids))


def measure_model(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.ar)
    # The AR model judges generative perplexity; as the measured model its holes run their full length
    # (the model's own EOS does not stop them), as a diffusion model's do.
    judge = AutoregressiveEngine(AutoModelForCausalLM.from_pretrained(args.ar), tokenizer, batch_size=args.batch_size,
                                 sampling=True, full_length=True)
    documents = read_documents(args.data / "test.jsonl")
    windows = heldout_windows(tokenizer, documents, args.length)[: args.windows]
    tasks = generation_tasks(windows, tokenizer.eos_token_id, args.samples, args.prompt_tokens)
    examples = infill_examples(tokenizer, documents, args.spans, args.span_words, args.context, args.seed)
    result: dict[str, Any] = {"name": args.name, "init": args.init, "settings": {
        "windows": len(windows), "window_tokens": len(windows[0]), "levels": args.levels, "seed": args.seed,
        "spans": args.spans, "span_words": args.span_words, "context": args.context, "samples": args.samples,
        "prompt_tokens": args.prompt_tokens, "sampler": SAMPLER,
    }}
    generation: dict[str, dict[str, dict[str, float]]] = {task.condition: {} for task in tasks}
    shown: dict[str, dict[str, str]] = {}

    def show(task: GenerationTask, generated: list[list[int]]) -> None:
        shown[task.condition] = {"prompt": decode(tokenizer, task.prompts[0]), "text": decode(tokenizer, generated[0])}

    if args.diffusion is None:
        result.update(kind="autoregressive", checkpoint=str(args.ar), likelihood=likelihood(judge, windows, args))
        result["infilling"] = infilling(judge, examples, tokenizer.eos_token_id)
        reference = {}
        for task in tasks:
            generated, cost = timed_samples(judge, task, args.seed)
            generation[task.condition]["ar"] = {**generation_quality(judge, task.prompts, generated), **cost}
            show(task, generated)
            reference[task.condition] = generation_quality(judge, *reference_text(task, windows))
        result["reference"] = reference
    else:
        model, _ = load_diffusion_lm(args.diffusion, device="cpu", shift=args.shift)
        engine = DiffusionEngine(model, tokenizer, batch_size=args.batch_size)
        result.update(kind="diffusion", checkpoint=str(args.diffusion), shift=args.shift, anneal_steps=args.anneal_steps,
                      block_size=model.block_size, likelihood=likelihood(engine, windows, args))
        if model.block_size is None:
            result["infilling"] = infilling(engine, examples, tokenizer.eos_token_id)
        cells = [(str(steps), steps, SAMPLER) for steps in args.steps if steps is not None and model.block_size is None]
        cells += [("n", None, SAMPLER), ("threshold", None, THRESHOLD)]
        for task in tasks:
            for key, steps, sampler in cells:
                generated, cost = timed_samples(engine, task, args.seed, steps, sampler)
                generation[task.condition][key] = {**generation_quality(judge, task.prompts, generated), **cost}
                if key == "n":
                    show(task, generated)
    result["generation"] = generation
    result["samples"] = shown
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ar", type=Path, required=True, help="the AR base model (judge of generative perplexity)")
    parser.add_argument("--diffusion", type=Path, help="the diffusion model to measure (default: measure the AR model)")
    parser.add_argument("--shift", type=parse_bool, default=True, help="the diffusion model's shift (default true)")
    parser.add_argument("--anneal-steps", type=int, default=1,
                        help="the diffusion run's anneal_steps, recorded for the report (default 1: none)")
    parser.add_argument("--name", required=True, help="the model's name in the report")
    parser.add_argument("--init", choices=("init", "pt"), required=True,
                        help="what the model was trained from: the random GPT-2 (init) or the AR base (pt)")
    parser.add_argument("--data", type=Path, required=True, help="folder with test.jsonl (prepare_text.py)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of every draw (default 0)")
    parser.add_argument("--length", type=int, default=128, help="window length: cutoff_len of training (default 128)")
    parser.add_argument("--windows", type=int, default=128, help="held-out windows scored for the NLL (default 128)")
    parser.add_argument("--levels", type=int, default=32, help="noise levels of the ELBO estimate (default 32)")
    parser.add_argument("--spans", type=int, default=600, help="infilling spans (default 600)")
    parser.add_argument("--span-words", type=int, default=3, help="words per infilling span (default 3)")
    parser.add_argument("--context", type=int, default=48, help="tokens given on each side of a span (default 48)")
    parser.add_argument("--samples", type=int, default=16, help="generated sequences per condition and T (default 16)")
    parser.add_argument("--prompt-tokens", type=int, default=32, help="tokens of a held-out prefix (default 32)")
    parser.add_argument("--steps", default="16,64,n",
                        help="reverse steps T of generation; n = one per generated token, always measured with the threshold "
                        "cell; a block model only gets those two (default 16,64,n)")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per forward pass (default 64)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def action() -> None:
        args.steps = parse_steps(args.steps)
        result = measure_model(args)
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        like, infill = result["likelihood"], result.get("infilling")
        logger.info("%s: NLL %s %.3f (ppl %.1f), infilling %s", args.name, "bound" if like["bound"] else "exact",
                    like["nll"], like["perplexity"],
                    "not measured (a block model)" if infill is None else f"{infill['token_accuracy']:.1f}% of tokens")

    return run_command(action)


if __name__ == "__main__":
    sys.exit(main())
