"""LAMBADA: generate the passage's last word and count exact matches, once per passage.

The original protocol: the passage is tokenized whole (with the tokenizer's special tokens); its first
``len(tokens(passage without the last word))`` tokens are given and the rest, the last word's tokens, are
generated with T equal to their number by the original sampler at temperature 1
(docs/design.md#evaluation-protocols). ``lambada`` reads the paper's lower-cased, tokenized test file;
``lambada_openai`` the detokenized, cased version most harness users report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llamafactory.errors import UserInputError

from ..data import DataSource, HubDataset, read_jsonl, read_lines, require_fields
from ..engine import Engine, FillRequest
from ..text import example_seed, split_whole
from .base import ACCURACY, Settings, Task, TaskResult, field_means, positions


@dataclass(frozen=True)
class LastWordExample:
    id: str
    context: str  # the passage without its last word (no trailing space)
    target: str  # the last word


def split_last_word(task: str, number: int, text: str) -> LastWordExample:
    words = text.split()
    if len(words) < 2:
        raise UserInputError(f"task {task}: passage {number} has fewer than two words")
    return LastWordExample(f"{task}/{number}", " ".join(words[:-1]), words[-1])


def load_lambada(source: DataSource) -> list[LastWordExample]:
    """``lambada_test_plain_text.txt`` (one passage per line, target = last word) or ``cimec/lambada``."""
    hub = HubDataset("cimec/lambada", "test", "plain_text")
    path = source.resolve("lambada", "lambada", "lambada_test_plain_text.txt", hub=hub)
    texts = [row["text"] for row in source.hub_rows("lambada", hub)] if path is None else read_lines(path)
    return [split_last_word("lambada", n, text) for n, text in enumerate(texts)]


def load_lambada_openai(source: DataSource) -> list[LastWordExample]:
    """``lambada_openai.jsonl`` (context, continuation) or ``EleutherAI/lambada_openai`` (text)."""
    hub = HubDataset("EleutherAI/lambada_openai", "test", "default")
    path = source.resolve("lambada_openai", "lambada_openai", "lambada_openai.jsonl", hub=hub)
    if path is None:
        return [split_last_word("lambada_openai", n, row["text"])
                for n, row in enumerate(source.hub_rows("lambada_openai", hub))]
    examples = []
    for n, row in enumerate(read_jsonl(path)):
        require_fields("lambada_openai", path, n + 1, row, ("context", "continuation"))
        examples.append(LastWordExample(f"lambada_openai/{n}", row["context"].rstrip(), row["continuation"].strip()))
    return examples


def evaluate_last_word(task: str, engine: Engine, examples: list[LastWordExample], settings: Settings,
                       indices: Sequence[int] | None = None) -> TaskResult:
    requests = []
    for index, example in zip(positions(examples, indices), examples):
        context, target = split_whole(engine.tokenizer, example.context, f"{example.context} {example.target}",
                                      special_tokens=True)
        requests.append(FillRequest(context, len(target), (), steps=len(target),
                                    seed=example_seed(settings.seed, task, index)))
    decoding = settings.decoding(engine.decoding, temperature=1.0)
    holes = engine.fill(requests, decoding, desc=task)
    records = []
    for example, request, hole in zip(examples, requests, holes):
        prediction = engine.tokenizer.decode(hole, skip_special_tokens=True).strip()
        records.append({"id": example.id, "target": example.target, "prediction": prediction,
                        "tokens": request.length, "correct": prediction == example.target})
    used = {"seed": settings.seed, "diffusion_steps": "target length", **decoding.as_dict()}
    return TaskResult(field_means(records, ACCURACY), records,
                      used if engine.kind == "diffusion" else {"decoding": "greedy"})


TASKS = (
    Task("lambada", "Lamb.", ("accuracy",), load_lambada,
         lambda engine, examples, settings, indices=None: evaluate_last_word("lambada", engine, examples, settings,
                                                                        indices), ACCURACY),
    Task("lambada_openai", "Lamb.-OAI", ("accuracy",), load_lambada_openai,
         lambda engine, examples, settings, indices=None: evaluate_last_word("lambada_openai", engine, examples,
                                                                        settings, indices), ACCURACY,
         in_paper=False),
)
