"""TriviaQA (closed book): generate an answer of the gold length plus a margin, score EM and F1.

The paper's protocol generates after ``Question: ...\\nAnswer:`` with T equal to the generated length.
``exact_match``: an accepted answer occurs, word for word, in the normalized first line of the output
(the paper's containment rule, made word-boundary safe). ``f1``: the best token-overlap F1 against
any accepted answer. Answers are normalized as in SQuAD (case, punctuation, articles, spaces).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass

from ..data import DataSource, HubDataset, read_jsonl, require_fields
from ..engine import Engine, FillRequest
from ..text import encode_pair, example_seed
from .base import Settings, Task, TaskResult, mean

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


@dataclass(frozen=True)
class QuestionExample:
    id: str
    prompt: str  # "Question: ...\nAnswer:"
    answer: str
    aliases: tuple[str, ...]


def normalize_answer(text: str) -> list[str]:
    """SQuAD normalization, as a list of words."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return _ARTICLES.sub(" ", text).split()


def contains_answer(prediction: str, answers: tuple[str, ...]) -> bool:
    """Whether some answer's normalized words appear contiguously in the normalized prediction."""
    words = normalize_answer(prediction)
    for answer in answers:
        target = normalize_answer(answer)
        if target and any(words[i : i + len(target)] == target for i in range(len(words) - len(target) + 1)):
            return True
    return False


def token_f1(prediction: str, answers: tuple[str, ...]) -> float:
    """The best SQuAD token F1 of the prediction against any answer."""
    predicted = normalize_answer(prediction)
    best = 0.0
    for answer in answers:
        gold = normalize_answer(answer)
        overlap = sum((Counter(predicted) & Counter(gold)).values())
        if overlap:
            precision, recall = overlap / len(predicted), overlap / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


def load_triviaqa(source: DataSource) -> list[QuestionExample]:
    """MosaicML ``triviaqa_sm_sub.jsonl`` (context, answer, aliases) or ``mandarjoshi/trivia_qa`` rc.nocontext."""
    hub = HubDataset("mandarjoshi/trivia_qa", "validation", "rc.nocontext")
    path = source.resolve("triviaqa", "triviaqa", "triviaqa_sm_sub.jsonl", hub=hub)
    if path is None:
        return [
            QuestionExample(f"triviaqa/{n}", f"Question: {row['question']}\nAnswer:", row["answer"]["value"],
                            tuple(dict.fromkeys([row["answer"]["value"], *row["answer"]["aliases"]])))
            for n, row in enumerate(source.hub_rows("triviaqa", hub))
        ]
    examples = []
    for n, row in enumerate(read_jsonl(path)):
        require_fields("triviaqa", path, n + 1, row, ("context", "answer", "aliases"))
        aliases = tuple(dict.fromkeys([row["answer"], *row["aliases"]]))
        examples.append(QuestionExample(f"triviaqa/{n}", row["context"], row["answer"], aliases))
    return examples


def evaluate_triviaqa(engine: Engine, examples: list[QuestionExample], settings: Settings) -> TaskResult:
    requests = []
    for index, example in enumerate(examples):
        prompt, gold = encode_pair(engine.tokenizer, example.prompt, " " + example.answer)
        length = len(gold) + settings.triviaqa_extra_tokens
        requests.append(FillRequest(prompt, length, (), steps=length,
                                    seed=example_seed(settings.seed, "triviaqa", index)))
    decoding = settings.decoding(engine.decoding)
    holes = engine.fill(requests, decoding, desc="triviaqa")
    records = []
    for example, hole in zip(examples, holes):
        generated = engine.tokenizer.decode(hole, skip_special_tokens=True)
        answer = first_line(generated)
        records.append({"id": example.id, "answer": example.answer, "generated": generated, "prediction": answer,
                        "exact_match": contains_answer(answer, example.aliases),
                        "f1": token_f1(answer, example.aliases)})
    metrics = {"exact_match": mean([r["exact_match"] for r in records]), "f1": mean([r["f1"] for r in records])}
    used = {"seed": settings.seed, "extra_tokens": settings.triviaqa_extra_tokens,
            "diffusion_steps": "generated length", **decoding.as_dict()}
    return TaskResult(metrics, records, used if engine.kind == "diffusion" else
                      {"decoding": "greedy", "extra_tokens": settings.triviaqa_extra_tokens})


TASKS = (Task("triviaqa", "TriQA", ("exact_match",), load_triviaqa, evaluate_triviaqa),)
