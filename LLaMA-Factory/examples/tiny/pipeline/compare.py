"""Compare the AR model with the diffusion models on the tiny pipeline's held-out tasks.

(a) middle-span infilling, (b) prefix completion, (c) the fine-tuned task (reversal). Every model is
measured through the evaluation's engines (``dlm_eval``): the diffusion models fill the masked span with
the core sampler (greedy, most-confident-first) at each number of steps T, seeing the context on both
sides; the AR model decodes greedily left to right, sees only what precedes the span and runs the span's
full length. Every item scores 1 when the generated span equals the gold one up to end-of-text.

    python compare.py --data output/tiny/data --ar output/tiny/pt --diffusion output/tiny/ddm \
        --sft output/tiny/ddm-sft --out ../example_output
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dlm_eval import AutoregressiveEngine, Decoding, DiffusionEngine
from dlm_eval.engine import Engine
from dlm_eval.spans import Span, exact_matches, fill_spans, parse_steps
from dlm_eval.text import encode
from llamafactory.ddm import load_diffusion_lm
from llamafactory.entry_points import run_command
from llamafactory.errors import UserInputError

logger = logging.getLogger(__name__)

AR_NAME = "AR (pt)"
AR_SFT_NAME = "AR (sft)"
DDM_NAME = "diffusion (ddm)"
SFT_NAME = "diffusion (ddm-sft)"
TASKS = {"infill": "(a) infilling", "complete": "(b) completion", "reverse": "(c) reversal"}


def read_jsonl(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise UserInputError(f"test set {path} does not exist; run synthetic.py first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Encoder:
    """Turns test records into spans; a record starts after an end-of-text token, as in the corpus."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def ids(self, text: str) -> tuple[int, ...]:
        return tuple(encode(self.tokenizer, text))

    def infill(self, row: dict[str, str]) -> Span:
        eos = self.tokenizer.eos_token_id
        return Span(row["kind"], (eos, *self.ids(row["prefix"])), self.ids(row["middle"]),
                    (*self.ids(row["suffix"]), eos))

    def completion(self, row: dict[str, str]) -> Span:
        return Span(row["kind"], (self.tokenizer.eos_token_id, *self.ids(row["prefix"])), self.ids(row["target"]))

    def reverse_as_text(self, row: dict[str, str]) -> Span:
        """The reversal as a corpus record ("reverse k q z gives"), for the pre-trained models."""
        return Span("reverse", (self.tokenizer.eos_token_id, *self.ids(row["prompt"])), self.ids(row["response"]))

    def reverse_as_ar_sft(self, row: dict[str, str]) -> Span:
        """The sft layout ``<bos> prompt response <eos>``: the answer must end with ``<eos>``."""
        tok = self.tokenizer
        return Span("reverse", (tok.bos_token_id, *self.ids(row["prompt"])), (*self.ids(row["response"]), tok.eos_token_id))

    def reverse_as_sft(self, row: dict[str, str], length: int) -> Span:
        """The ddm-sft layout ``<bos> prompt <sep> response <eos> <pad>...`` of ``length`` tokens."""
        tok = self.tokenizer
        before = (tok.bos_token_id, *self.ids(row["prompt"]), tok.sep_token_id)
        target = (*self.ids(row["response"]), tok.eos_token_id)
        if len(before) + len(target) > length:
            raise UserInputError(f"--sft-length {length} is too short for {row['prompt']!r}")
        return Span("reverse", before, target + (tok.pad_token_id,) * (length - len(before) - len(target)))


def greedy(strategy: str) -> Decoding:
    """Greedy decoding, fixing masked positions in the order of ``strategy``; AR engines decode greedily anyway."""
    return Decoding(greedy=True, top_p=None, temperature=1.0, strategy=strategy)


def percent(hits: Sequence[bool]) -> float:
    return round(100.0 * sum(hits) / max(1, len(hits)), 1)


def steps_label(steps: int | None) -> str:
    return "T = n tokens" if steps is None else f"T = {steps}"


@dataclass
class Evaluation:
    """Exact-match scores by model, decoding and task, plus per-kind infilling scores and samples."""

    scores: dict[tuple[str, str], dict[str, float]]
    infill_by_kind: dict[tuple[str, str], dict[str, float]]
    samples: list[dict[str, str]]


def evaluate(args: argparse.Namespace, steps: list[int | None]) -> Evaluation:
    tokenizer = AutoTokenizer.from_pretrained(args.ar)
    encoder = Encoder(tokenizer)
    eos = tokenizer.eos_token_id
    decoding = greedy(args.strategy)
    rows = {name: read_jsonl(args.data / f"test_{name}.jsonl")[: args.limit] for name in TASKS}
    sets = {
        "infill": [encoder.infill(row) for row in rows["infill"]],
        "complete": [encoder.completion(row) for row in rows["complete"]],
        "reverse": [encoder.reverse_as_text(row) for row in rows["reverse"]],
    }
    scores: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    by_kind: dict[tuple[str, str], dict[str, float]] = {}
    outputs: dict[tuple[str, str], list[tuple[int, ...]]] = {}

    def run(model_name: str, label: str, engine: Engine, model_steps: int | None, task: str,
            spans: list[Span]) -> None:
        generated = fill_spans(engine, spans, decoding, steps=model_steps, desc=f"{model_name} {label} {task}")
        hits = exact_matches(generated, spans, eos)
        scores[(model_name, label)][task] = percent(hits)
        if task == "infill":
            by_kind[(model_name, label)] = {
                kind: percent([h for h, e in zip(hits, spans) if e.kind == kind])
                for kind in sorted({e.kind for e in spans})
            }
            outputs[(model_name, label)] = generated
        logger.info("%-20s %-14s %-9s %5.1f%%", model_name, label, task, percent(hits))

    def ar_engine(path: Path) -> Engine:
        """Greedy, every span generated to its full length (the model's own EOS does not stop it)."""
        model = AutoModelForCausalLM.from_pretrained(path)
        return AutoregressiveEngine(model, tokenizer, batch_size=args.batch_size, full_length=True)

    def diffusion_engine(path: Path) -> Engine:
        model, own_tokenizer = load_diffusion_lm(path, device="cpu")
        return DiffusionEngine(model, own_tokenizer, batch_size=args.batch_size)

    ar_label = "greedy, prefix only"
    base = ar_engine(args.ar)
    for task, spans in sets.items():
        run(AR_NAME, ar_label, base, None, task, spans)
    if args.ar_sft is not None:
        run(AR_SFT_NAME, "greedy", ar_engine(args.ar_sft), None, "reverse",
            [encoder.reverse_as_ar_sft(r) for r in rows["reverse"]])
    diffusion = diffusion_engine(args.diffusion)
    for count in steps:
        for task, spans in sets.items():
            run(DDM_NAME, steps_label(count), diffusion, count, task, spans)
    if args.sft is not None:
        tuned = diffusion_engine(args.sft)
        sft_spans = [encoder.reverse_as_sft(row, args.sft_length) for row in rows["reverse"]]
        for count in steps:
            run(SFT_NAME, steps_label(count), tuned, count, "reverse", sft_spans)
    best = (DDM_NAME, steps_label(steps[-1]))
    samples = [
        {
            "given": f"{row['prefix']} ____ {row['suffix']}",
            "gold": row["middle"],
            AR_NAME: tokenizer.decode(outputs[(AR_NAME, ar_label)][i]).strip(),
            f"{DDM_NAME}, {best[1]}": tokenizer.decode(outputs[best][i]).strip(),
        }
        for i, row in enumerate(rows["infill"][: args.show])
    ]
    return Evaluation(dict(scores), by_kind, samples)


def markdown(evaluation: Evaluation, note: str) -> str:
    """The results as markdown: the main table, infilling by record kind, and a few infilled records."""
    lines = ["# Tiny pipeline: AR vs diffusion (exact match, %)", "", note, "",
             "| model | decoding | " + " | ".join(TASKS.values()) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in TASKS) + " |"]
    for (model_name, decoding), by_task in evaluation.scores.items():
        cells = [f"{by_task[task]:.1f}" if task in by_task else "—" for task in TASKS]
        lines.append(f"| {model_name} | {decoding} | " + " | ".join(cells) + " |")
    kinds = sorted({kind for scores in evaluation.infill_by_kind.values() for kind in scores})
    lines += ["", "## (a) infilling by record kind", "",
              "| model | decoding | " + " | ".join(kinds) + " |",
              "| --- | --- | " + " | ".join("---:" for _ in kinds) + " |"]
    for (model_name, decoding), scores in evaluation.infill_by_kind.items():
        lines.append(f"| {model_name} | {decoding} | " + " | ".join(f"{scores[k]:.1f}" for k in kinds) + " |")
    if evaluation.samples:
        columns = list(evaluation.samples[0])
        lines += ["", "## Infilled records", "", "| " + " | ".join(columns) + " |",
                  "| " + " | ".join("---" for _ in columns) + " |"]
        lines += ["| " + " | ".join(sample[c] for c in columns) + " |" for sample in evaluation.samples]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with test_infill/complete/reverse.jsonl")
    parser.add_argument("--ar", type=Path, required=True, help="the AR checkpoint (output of stage pt)")
    parser.add_argument("--ar-sft", type=Path, help="the AR model fine-tuned on reversal (output of stage sft)")
    parser.add_argument("--diffusion", type=Path, required=True, help="the adapted checkpoint (output of stage ddm)")
    parser.add_argument("--sft", type=Path, help="the fine-tuned checkpoint (output of stage ddm-sft)")
    parser.add_argument("--sft-length", type=int, default=24, help="cutoff_len of the ddm-sft stage (default 24)")
    parser.add_argument("--steps", default="1,4,16,n",
                        help="diffusion steps T to compare; 'n' = one per generated token (default 1,4,16,n)")
    parser.add_argument("--strategy", choices=("confidence", "topk", "random"), default="confidence",
                        help="which masked positions to fix at each step (default confidence: most confident first)")
    parser.add_argument("--limit", type=int, help="use only the first N examples of each test set")
    parser.add_argument("--batch-size", type=int, default=128, help="examples per forward pass (default 128)")
    parser.add_argument("--show", type=int, default=8, help="infilled records to list in the report (default 8)")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.md and results.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def action() -> None:
        steps = parse_steps(args.steps)
        torch.manual_seed(0)
        evaluation = evaluate(args, steps)
        args.out.mkdir(parents=True, exist_ok=True)
        note = (f"Held-out synthetic records ({args.limit or 'all'} per task). Diffusion: greedy, "
                f"strategy `{args.strategy}`, T diffusion steps; AR: greedy decoding given the prefix only.")
        (args.out / "results.md").write_text(markdown(evaluation, note))
        flat = {f"{model} | {decoding}": by_task for (model, decoding), by_task in evaluation.scores.items()}
        (args.out / "results.json").write_text(json.dumps(flat, indent=2) + "\n")
        logger.info("wrote %s", args.out / "results.md")

    return run_command(action)


if __name__ == "__main__":
    sys.exit(main())
