"""GSM8K for a fine-tuned (ddm-sft) model: generate the worked answer, compare the number after ``####``.

The diffusion model sees ``[BOS] question [SEP]`` (the ddm-sft stage's framing, ``template: empty``)
followed by masks up to ``--gsm8k_max_length`` (the fine-tuning ``cutoff_len``) and decodes as the
original GSM8K prediction did: argmax tokens, top-k confidence unmasking, no top-p, the family's original
temperature (DiffuGPT 0.98, DiffuLLaMA 1.0) and T = ``--gsm8k_steps`` (64). The answer ends at the first
EOS or pad.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from llamafactory.errors import UserInputError

from ..data import DataSource, HubDataset, read_jsonl, require_fields
from ..engine import Engine, FillRequest
from ..text import encode, example_seed
from .base import ACCURACY, Settings, Task, TaskResult, field_means, positions

_FINAL = re.compile(r"####\s*\$?\s*([-+]?\$?[\d,]*\.?\d+)")


@dataclass(frozen=True)
class MathExample:
    id: str
    question: str
    answer: str  # the worked solution, ending in "#### n"
    gold: str  # n


def final_number(text: str) -> str | None:
    """The number after the last ``####`` (commas and ``$`` removed), or None when there is none."""
    found = _FINAL.findall(text)
    if not found:
        return None
    return found[-1].replace(",", "").replace("$", "")


def same_number(predicted: str | None, gold: str) -> bool:
    if predicted is None:
        return False
    try:
        return Decimal(predicted) == Decimal(gold)
    except InvalidOperation:
        return predicted == gold


def load_gsm8k(source: DataSource) -> list[MathExample]:
    """``test.jsonl`` (question, answer) from openai/grade-school-math or ``openai/gsm8k`` (main, test)."""
    hub = HubDataset("openai/gsm8k", "test", "main")
    path = source.resolve("gsm8k", "gsm8k", "test.jsonl", hub=hub)
    rows = source.hub_rows("gsm8k", hub) if path is None else read_jsonl(path)
    examples = []
    for n, row in enumerate(rows):
        require_fields("gsm8k", path or "the Hub split", n + 1, row, ("question", "answer"))
        gold = final_number(row["answer"])
        if gold is None:
            raise UserInputError(f"task gsm8k: answer {n + 1} of {path or 'the Hub split'} has no '#### n' line")
        examples.append(MathExample(f"gsm8k/{n}", row["question"], row["answer"], gold))
    return examples


def until_end(hole: list[int], end_ids: frozenset[int]) -> list[int]:
    """The tokens before the first end-of-answer token."""
    return hole[: next((k for k, token in enumerate(hole) if token in end_ids), len(hole))]


def evaluate_gsm8k(engine: Engine, examples: list[MathExample], settings: Settings,
                   indices: Sequence[int] | None = None) -> TaskResult:
    requests = []
    for index, example in zip(positions(examples, indices), examples):
        question = encode(engine.tokenizer, example.question)[-(settings.gsm8k_max_length // 2) :]
        prefix = engine.supervised_prompt(question)
        requests.append(FillRequest(prefix, settings.gsm8k_max_length - len(prefix), (), steps=settings.gsm8k_steps,
                                    seed=example_seed(settings.seed, "gsm8k", index)))
    decoding = settings.decoding(engine.decoding, greedy=True, temperature=settings.gsm8k_temperature)
    holes = engine.fill(requests, decoding, desc="gsm8k")
    records = []
    for example, hole in zip(examples, holes):
        response = engine.tokenizer.decode(until_end(hole, engine.eos_ids), skip_special_tokens=True).strip()
        predicted = final_number(response)
        records.append({"id": example.id, "gold": example.gold, "prediction": predicted, "response": response,
                        "correct": same_number(predicted, example.gold)})
    used = {"seed": settings.seed, "diffusion_steps": settings.gsm8k_steps, "max_length": settings.gsm8k_max_length,
            **decoding.as_dict()}
    if engine.kind != "diffusion":
        used = {"decoding": "greedy", "max_length": settings.gsm8k_max_length}
    return TaskResult(field_means(records, ACCURACY), records, used)


TASKS = (Task("gsm8k", "GSM8K", ("accuracy",), load_gsm8k, evaluate_gsm8k, ACCURACY),)
