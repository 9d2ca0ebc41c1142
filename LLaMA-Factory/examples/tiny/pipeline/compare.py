"""Compare the AR model with the diffusion models on the tiny pipeline's held-out tasks.

(a) middle-span infilling, (b) prefix completion, (c) the fine-tuned task (reversal). The diffusion
models fill the masked span with ``llamafactory.ddm.sample`` (greedy, most-confident-first) at each
number of steps T, seeing the context on both sides; the AR model decodes greedily left to right and
sees only what precedes the span. Every item scores 1 when the generated span equals the gold one.

    python compare.py --data output/tiny/data --ar output/tiny/pt --diffusion output/tiny/ddm \
        --sft output/tiny/ddm-sft --out ../example_output
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from llamafactory.ddm import DiffusionLM, SamplingConfig, load_diffusion_lm, sample
from llamafactory.model.generation import generate_continuations

logger = logging.getLogger(__name__)

AR_NAME = "AR (pt)"
AR_SFT_NAME = "AR (sft)"
DDM_NAME = "diffusion (ddm)"
SFT_NAME = "diffusion (ddm-sft)"
TASKS = {"infill": "(a) infilling", "complete": "(b) completion", "reverse": "(c) reversal"}


@dataclass(frozen=True)
class Example:
    """One test item as token ids: given ``before``, a ``target`` span to generate, given ``after``."""

    kind: str
    before: tuple[int, ...]
    target: tuple[int, ...]
    after: tuple[int, ...] = ()


def read_jsonl(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise SystemExit(f"test set {path} does not exist; run synthetic.py first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Encoder:
    """Turns test records into examples; a record starts after an end-of-text token, as in the corpus."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def ids(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else ()

    def infill(self, row: dict[str, str]) -> Example:
        eos = self.tokenizer.eos_token_id
        return Example(row["kind"], (eos, *self.ids(row["prefix"])), self.ids(row["middle"]),
                       (*self.ids(row["suffix"]), eos))

    def completion(self, row: dict[str, str]) -> Example:
        return Example(row["kind"], (self.tokenizer.eos_token_id, *self.ids(row["prefix"])), self.ids(row["target"]))

    def reverse_as_text(self, row: dict[str, str]) -> Example:
        """The reversal as a corpus record ("reverse k q z gives"), for the pre-trained models."""
        return Example("reverse", (self.tokenizer.eos_token_id, *self.ids(row["prompt"])), self.ids(row["response"]))

    def reverse_as_ar_sft(self, row: dict[str, str]) -> Example:
        """The sft layout ``<bos> prompt response <eos>``: the answer must end with ``<eos>``."""
        tok = self.tokenizer
        return Example("reverse", (tok.bos_token_id, *self.ids(row["prompt"])), (*self.ids(row["response"]), tok.eos_token_id))

    def reverse_as_sft(self, row: dict[str, str], length: int) -> Example:
        """The ddm-sft layout ``<bos> prompt <sep> response <eos> <pad>...`` of ``length`` tokens."""
        tok = self.tokenizer
        before = (tok.bos_token_id, *self.ids(row["prompt"]), tok.sep_token_id)
        target = (*self.ids(row["response"]), tok.eos_token_id)
        if len(before) + len(target) > length:
            raise SystemExit(f"--sft-length {length} is too short for {row['prompt']!r}")
        return Example("reverse", before, target + (tok.pad_token_id,) * (length - len(before) - len(target)))


def answer(tokens: Sequence[int], eos_id: int) -> tuple[int, ...]:
    """The tokens before the first end-of-text token (all of them when there is none)."""
    tokens = tuple(tokens)
    return tokens[: tokens.index(eos_id)] if eos_id in tokens else tokens


def groups(examples: Sequence[Example], batch_size: int) -> Iterable[list[int]]:
    """Indices of examples in batches of equal shape, so that no padding is needed."""
    by_shape: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        by_shape[(len(example.before), len(example.target), len(example.after))].append(index)
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            yield indices[start : start + batch_size]


Generator = Callable[[list[Example]], list[tuple[int, ...]]]


def ar_generate(model: PreTrainedModel, pad_id: int) -> Generator:
    """Greedy left-to-right decoding of ``len(target)`` tokens from ``before`` alone (no early stop)."""

    def generate(batch: list[Example]) -> list[tuple[int, ...]]:
        generated = generate_continuations(model, [e.before for e in batch], len(batch[0].target), pad_id=pad_id)
        return [tuple(row) for row in generated]

    return generate


def diffusion_generate(model: DiffusionLM, steps: int | None, strategy: str) -> Generator:
    """Reverse diffusion over the masked span with both sides given; ``steps=None`` means one per token."""

    def generate(batch: list[Example]) -> list[tuple[int, ...]]:
        first = batch[0]
        span = slice(len(first.before), len(first.before) + len(first.target))
        ids = torch.tensor([(*e.before, *(model.mask_id,) * len(e.target), *e.after) for e in batch])
        given = torch.ones_like(ids, dtype=torch.bool)
        given[:, span] = False
        config = SamplingConfig(steps=steps or len(first.target), greedy=True, top_p=None, temperature=1.0,
                                strategy=strategy, shift=model.shift)
        tokens = sample(model, ids.to(model.device), model.mask_id, config, src_mask=given.to(model.device)).tokens
        return [tuple(row) for row in tokens[:, span].tolist()]

    return generate


def exact_match(
    generate: Generator, examples: Sequence[Example], eos_id: int, batch_size: int, label: str
) -> tuple[list[bool], list[tuple[int, ...]]]:
    """Per-example hits and generated spans, in the order of ``examples``."""
    outputs: list[tuple[int, ...]] = [()] * len(examples)
    batches = list(groups(examples, batch_size))
    for indices in tqdm(batches, desc=label, leave=False):
        for index, generated in zip(indices, generate([examples[i] for i in indices])):
            outputs[index] = generated
    hits = [answer(out, eos_id) == answer(ex.target, eos_id) for out, ex in zip(outputs, examples)]
    return hits, outputs


def percent(hits: Sequence[bool]) -> float:
    return round(100.0 * sum(hits) / max(1, len(hits)), 1)


def parse_steps(text: str) -> list[int | None]:
    """``"1,4,16,n"`` -> ``[1, 4, 16, None]``; ``n`` stands for one step per generated token."""
    values: list[int | None] = []
    for item in text.split(","):
        item = item.strip()
        if item == "n":
            values.append(None)
        elif item.isdigit() and int(item) > 0:
            values.append(int(item))
        else:
            raise SystemExit(f"--steps: expected positive integers or 'n' separated by commas, got {item!r}")
    return values


def steps_label(steps: int | None) -> str:
    return "T = n tokens" if steps is None else f"T = {steps}"


@dataclass
class Evaluation:
    """Exact-match scores by model, decoding and task, plus per-kind infilling scores and samples."""

    scores: dict[tuple[str, str], dict[str, float]]
    infill_by_kind: dict[tuple[str, str], dict[str, float]]
    samples: list[dict[str, str]]


def evaluate(args: argparse.Namespace) -> Evaluation:
    ar_model = AutoModelForCausalLM.from_pretrained(args.ar).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.ar)
    encoder = Encoder(tokenizer)
    eos = tokenizer.eos_token_id
    rows = {name: read_jsonl(args.data / f"test_{name}.jsonl")[: args.limit] for name in TASKS}
    sets = {
        "infill": [encoder.infill(row) for row in rows["infill"]],
        "complete": [encoder.completion(row) for row in rows["complete"]],
        "reverse": [encoder.reverse_as_text(row) for row in rows["reverse"]],
    }
    scores: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    by_kind: dict[tuple[str, str], dict[str, float]] = {}
    outputs: dict[tuple[str, str], list[tuple[int, ...]]] = {}

    def run(model_name: str, decoding: str, generate: Generator, task: str, examples: list[Example]) -> None:
        hits, generated = exact_match(generate, examples, eos, args.batch_size, f"{model_name} {decoding} {task}")
        scores[(model_name, decoding)][task] = percent(hits)
        if task == "infill":
            by_kind[(model_name, decoding)] = {
                kind: percent([h for h, e in zip(hits, examples) if e.kind == kind])
                for kind in sorted({e.kind for e in examples})
            }
            outputs[(model_name, decoding)] = generated
        logger.info("%-20s %-14s %-9s %5.1f%%", model_name, decoding, task, percent(hits))

    ar_decoding = "greedy, prefix only"
    for task, examples in sets.items():
        run(AR_NAME, ar_decoding, ar_generate(ar_model, tokenizer.pad_token_id), task, examples)
    if args.ar_sft is not None:
        tuned_ar = AutoModelForCausalLM.from_pretrained(args.ar_sft).eval()
        run(AR_SFT_NAME, "greedy", ar_generate(tuned_ar, tokenizer.pad_token_id), "reverse", [encoder.reverse_as_ar_sft(r) for r in rows["reverse"]])
    diffusion, _ = load_diffusion_lm(args.diffusion, device="cpu")
    for steps in args.steps:
        for task, examples in sets.items():
            run(DDM_NAME, steps_label(steps), diffusion_generate(diffusion, steps, args.strategy), task, examples)
    if args.sft is not None:
        tuned, _ = load_diffusion_lm(args.sft, device="cpu")
        sft_examples = [encoder.reverse_as_sft(row, args.sft_length) for row in rows["reverse"]]
        for steps in args.steps:
            run(SFT_NAME, steps_label(steps), diffusion_generate(tuned, steps, args.strategy), "reverse", sft_examples)
    best = (DDM_NAME, steps_label(args.steps[-1]))
    samples = [
        {
            "given": f"{row['prefix']} ____ {row['suffix']}",
            "gold": row["middle"],
            AR_NAME: tokenizer.decode(outputs[(AR_NAME, ar_decoding)][i]).strip(),
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with test_infill/complete/reverse.jsonl")
    parser.add_argument("--ar", type=Path, required=True, help="the AR checkpoint (output of stage pt)")
    parser.add_argument("--ar-sft", type=Path, help="the AR model fine-tuned on reversal (output of stage sft)")
    parser.add_argument("--diffusion", type=Path, required=True, help="the adapted checkpoint (output of stage ddm)")
    parser.add_argument("--sft", type=Path, help="the fine-tuned checkpoint (output of stage ddm-sft)")
    parser.add_argument("--sft-length", type=int, default=24, help="cutoff_len of the ddm-sft stage (default 24)")
    parser.add_argument("--steps", type=parse_steps, default=parse_steps("1,4,16,n"),
                        help="diffusion steps T to compare; 'n' = one per generated token (default 1,4,16,n)")
    parser.add_argument("--strategy", choices=("confidence", "topk", "random"), default="confidence",
                        help="which masked positions to fix at each step (default confidence: most confident first)")
    parser.add_argument("--limit", type=int, help="use only the first N examples of each test set")
    parser.add_argument("--batch-size", type=int, default=128, help="examples per forward pass (default 128)")
    parser.add_argument("--show", type=int, default=8, help="infilled records to list in the report (default 8)")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.md and results.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    evaluation = evaluate(args)
    args.out.mkdir(parents=True, exist_ok=True)
    note = (f"Held-out synthetic records ({args.limit or 'all'} per task). Diffusion: greedy, "
            f"strategy `{args.strategy}`, T diffusion steps; AR: greedy decoding given the prefix only.")
    (args.out / "results.md").write_text(markdown(evaluation, note))
    flat = {f"{model} | {decoding}": by_task for (model, decoding), by_task in evaluation.scores.items()}
    (args.out / "results.json").write_text(json.dumps(flat, indent=2) + "\n")
    logger.info("wrote %s", args.out / "results.md")


if __name__ == "__main__":
    main()
