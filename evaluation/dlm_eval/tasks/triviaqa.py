"""Short-answer generation: TriviaQA (closed book) and SQuAD (with its passage), exact match and F1.

Both follow the original scripts (docs/design.md#evaluation-protocols): the prompt is tokenized with the
tokenizer's special tokens, then exactly as many tokens as the longest accepted answer has are generated
(T = that length) by the original sampler, and an answer counts when one accepted answer, normalized as in
SQuAD (case, punctuation, articles, spaces), is a substring of the normalized output. The first 2,000
questions are used.

* ``triviaqa``: the protocol of the original AR-baseline script (``Question: <q>?\\nAnswer: ``); the
  paper's TriQA column (see evaluation/README.md for why).
* ``squad``: what the original diffusion script's "trivia" function ran: SQuAD v1.1 validation with the
  passage (``<context>\\nQuesion<q>?\\nAnswer: ``, the original's spelling).

``exact_match_words`` also requires whole words (``on`` does not match ``onion``); ``f1`` is the best
token-overlap F1 against any accepted answer.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamafactory.errors import UserInputError

from ..data import DataSource, HubDataset, read_jsonl, require_fields
from ..engine import Engine, FillRequest
from ..text import encode, example_seed
from .base import Evaluate, Settings, Task, TaskResult, field_means, positions

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
TRIVIAQA_PROMPT = "Question: {question}?\nAnswer: "
SQUAD_PROMPT = "{context}\nQuesion{question}?\nAnswer: "  # sic: the original's prompt
_MOSAIC_CONTEXT = re.compile(r"^Question: (.*)\nAnswer:\s*$", re.DOTALL)


@dataclass(frozen=True)
class QuestionExample:
    id: str
    prompt: str
    answers: tuple[str, ...]  # accepted answers; the longest in tokens sets the generated length
    normalized: tuple[str, ...] = ()  # further accepted answers, already normalized (TriviaQA's own)


def normalize_answer(text: str) -> list[str]:
    """SQuAD normalization, as a list of words."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return _ARTICLES.sub(" ", text).split()


def matches_answer(prediction: str, answers: tuple[str, ...], normalized: tuple[str, ...] = ()) -> bool:
    """The original rule: some normalized answer is a substring of the normalized prediction."""
    text = " ".join(normalize_answer(prediction))
    accepted = {" ".join(normalize_answer(answer)) for answer in answers} | set(normalized)
    return any(answer and answer in text for answer in accepted)


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


def _mosaic_question(path: Path, number: int, context: str) -> str:
    found = _MOSAIC_CONTEXT.match(context)
    if found is None:
        raise UserInputError(f"task triviaqa: context of record {number} in {path} is not 'Question: ...\\nAnswer:'")
    return found.group(1)


def load_triviaqa(source: DataSource) -> list[QuestionExample]:
    """MosaicML ``triviaqa_sm_sub.jsonl`` (context, answer, aliases) or ``mandarjoshi/trivia_qa`` rc.nocontext.

    The prompt is rebuilt from the question in the original script's form.
    """
    hub = HubDataset("mandarjoshi/trivia_qa", "validation", "rc.nocontext")
    path = source.resolve("triviaqa", "triviaqa", "triviaqa_sm_sub.jsonl", hub=hub)
    if path is None:
        examples = []
        for n, row in enumerate(source.hub_rows("triviaqa", hub)):
            answer = row["answer"]
            examples.append(QuestionExample(
                f"triviaqa/{n}", TRIVIAQA_PROMPT.format(question=row["question"]),
                tuple(answer["aliases"]) or (answer["value"],), tuple(answer.get("normalized_aliases", ()))))
        return examples
    examples = []
    for n, row in enumerate(read_jsonl(path)):
        require_fields("triviaqa", path, n + 1, row, ("context", "answer", "aliases"))
        question = _mosaic_question(path, n + 1, row["context"])
        examples.append(QuestionExample(f"triviaqa/{n}", TRIVIAQA_PROMPT.format(question=question),
                                        tuple(dict.fromkeys([row["answer"], *row["aliases"]]))))
    return examples


def _squad_example(number: int, context: str, question: str, answers: list[str]) -> QuestionExample:
    return QuestionExample(f"squad/{number}", SQUAD_PROMPT.format(context=context, question=question),
                           tuple(answers))


def _read_squad_file(path: Path) -> list[QuestionExample]:
    """SQuAD v1.1 ``dev-v1.1.json``: ``data[].paragraphs[].{context, qas[].{question, answers[].text}}``."""
    try:
        articles = json.loads(path.read_text(encoding="utf-8"))["data"]
        examples = []
        for article in articles:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    answers = [answer["text"] for answer in qa["answers"]]
                    examples.append(_squad_example(len(examples), paragraph["context"], qa["question"], answers))
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else f"missing or malformed field {error}"
        raise UserInputError(f"task squad: {path} is not a SQuAD v1.1 file ({reason})") from None
    return examples


def load_squad(source: DataSource) -> list[QuestionExample]:
    """The official ``dev-v1.1.json`` or ``rajpurkar/squad`` validation (the same questions, in the same order)."""
    hub = HubDataset("rajpurkar/squad", "validation")
    path = source.resolve("squad", "squad", "dev-v1.1.json", hub=hub)
    if path is not None:
        return _read_squad_file(path)
    return [_squad_example(n, row["context"], row["question"], list(row["answers"]["text"]))
            for n, row in enumerate(source.hub_rows("squad", hub))]


ANSWER_MEANS = {name: name for name in ("exact_match", "exact_match_words", "f1")}


def evaluate_answers(task: str, engine: Engine, examples: list[QuestionExample], settings: Settings,
                     extra_tokens: int = 0, indices: Sequence[int] | None = None) -> TaskResult:
    """Generate the longest accepted answer's length (+ ``extra_tokens``) after each prompt, with T = that length."""
    tokenizer = engine.tokenizer
    requests = []
    for index, example in zip(positions(examples, indices), examples):
        length = max(len(encode(tokenizer, answer)) for answer in example.answers) + extra_tokens
        requests.append(FillRequest(encode(tokenizer, example.prompt, special_tokens=True), length, (), steps=length,
                                    seed=example_seed(settings.seed, task, index)))
    decoding = settings.decoding(engine.decoding)
    holes = engine.fill(requests, decoding, desc=task)
    records = []
    for example, hole in zip(examples, holes):
        prediction = tokenizer.decode(hole, skip_special_tokens=True).strip()
        records.append({"id": example.id, "answers": list(example.answers), "prediction": prediction,
                        "exact_match": matches_answer(prediction, example.answers, example.normalized),
                        "exact_match_words": contains_answer(prediction, example.answers),
                        "f1": token_f1(prediction, example.answers)})
    metrics = field_means(records, ANSWER_MEANS)
    used: dict[str, Any] = {"extra_tokens": extra_tokens}
    if engine.kind == "diffusion":
        used.update(seed=settings.seed, diffusion_steps="generated length", **decoding.as_dict())
    else:
        used.update(decoding="greedy")
    return TaskResult(metrics, records, used)


def _evaluate(task: str, extra: Callable[[Settings], int]) -> Evaluate:
    return lambda engine, examples, settings, indices=None: evaluate_answers(task, engine, examples, settings,
                                                                        extra(settings), indices)


TASKS = (
    Task("triviaqa", "TriQA", ("exact_match",), load_triviaqa,
         _evaluate("triviaqa", lambda settings: settings.triviaqa_extra_tokens), ANSWER_MEANS, default_limit=2000),
    Task("squad", "SQuAD", ("exact_match",), load_squad, _evaluate("squad", lambda settings: 0), ANSWER_MEANS,
         default_limit=2000, in_paper=False),
)
