"""Multiple choice: HellaSwag, WinoGrande, Social IQa and PIQA, answered by the lowest score.

Every example holds one prompt per choice in two formats: ``original`` (the prompt strings and the
piece-by-piece tokenization of the original evaluation scripts, docs/design.md#evaluation-protocols) and
``harness`` (lm-evaluation-harness conventions: the continuation carries the word-boundary space and the
pair is tokenized as one string; WinoGrande scores only the rest of the sentence). All pairs of all
examples go to the engine in one call, so the diffusion scorer batches across examples, choices and levels.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamafactory.errors import UserInputError

from ..data import DataSource, HubDataset, read_jsonl, read_lines, require_fields
from ..engine import Engine
from ..text import Piece, encode_pair, encode_pieces
from .base import ACCURACY, Settings, Task, TaskResult, field_means


@dataclass(frozen=True)
class ChoiceExample:
    """One question: per choice, its prompt in both formats (``original`` pieces, ``harness`` pair)."""

    id: str
    original: tuple[tuple[Piece, ...], ...]
    harness: tuple[tuple[str, str], ...]  # (context, continuation), encoded as one string
    gold: int

    def encoded(self, tokenizer: Any, prompt_format: str) -> list[tuple[list[int], list[int]]]:
        """``(context_ids, continuation_ids)`` per choice.

        Under the original format a choice whose context is empty (a WinoGrande blank that opens the
        sentence) gives its first token to the context: with shift the first token is never scored.
        """
        if prompt_format == "harness":
            return [encode_pair(tokenizer, context, continuation) for context, continuation in self.harness]
        pairs = []
        for pieces in self.original:
            context, continuation = encode_pieces(tokenizer, pieces)
            pairs.append((context, continuation) if context else (continuation[:1], continuation[1:]))
        return pairs


def evaluate_choices(task: str, engine: Engine, examples: list[ChoiceExample], settings: Settings,
                     indices: Sequence[int] | None = None) -> TaskResult:
    """Accuracy of picking the lowest-scoring choice; per-example scores are kept. A choice's noise-level masks
    depend only on the seed, the estimator and its length, so ``indices`` (positions in the task) do not matter."""
    pairs = [pair for example in examples for pair in example.encoded(engine.tokenizer, settings.prompt_format)]
    scores = engine.score(pairs, steps=settings.diffusion_steps, seed=settings.seed, estimator=settings.scorer,
                          desc=task)
    records, offset = [], 0
    for example in examples:
        count = len(example.original)
        own = scores[offset : offset + count]
        offset += count
        prediction = min(range(len(own)), key=own.__getitem__)
        records.append({"id": example.id, "scores": own, "prediction": prediction, "gold": example.gold,
                        "correct": prediction == example.gold})
    used: dict[str, Any] = {"prompt_format": settings.prompt_format}
    if engine.kind == "diffusion":
        used.update(diffusion_steps=settings.diffusion_steps, seed=settings.seed, scorer=settings.scorer)
    return TaskResult(field_means(records, ACCURACY), records, used)


def _label(task: str, source: Path | str, number: int, text: str, count: int, base: int) -> int:
    """A label written as ``base .. base + count - 1``, as a 0-based index; anything else is an error."""
    try:
        value = int(str(text).strip()) - base
    except ValueError:
        value = -1
    if not 0 <= value < count:
        raise UserInputError(
            f"task {task}: label {text!r} of record {number} in {source} is not one of {base}..{base + count - 1}"
        )
    return value


def _aligned_labels(task: str, records: list[Any], labels_path: Path) -> list[str]:
    labels = read_lines(labels_path)
    if len(labels) != len(records):
        raise UserInputError(
            f"task {task}: {labels_path} holds {len(labels)} labels for {len(records)} records; they must align"
        )
    return labels


def clean_hellaswag(text: str) -> str:
    """The HellaSwag text cleaning of the original script and the harness (WikiHow bracket artifacts out)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_context(row: dict[str, Any]) -> str:
    """``activity_label: ctx_a Ctx_b``, cleaned: the original capitalises ``ctx_b`` (``str.capitalize``)."""
    return clean_hellaswag(f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}")


def hellaswag_example(number: int, context: str, endings: list[str], gold: int) -> ChoiceExample:
    """Original: ``encode(context) + encode(ending)``, both with the tokenizer's special tokens and no space
    between them; harness: ``context`` + ``" " + ending``."""
    original = tuple((Piece(context, special_tokens=True), Piece(ending, special_tokens=True, scored=True))
                     for ending in endings)
    return ChoiceExample(f"hellaswag/{number}", original, tuple((context, " " + ending) for ending in endings), gold)


def load_hellaswag(source: DataSource) -> list[ChoiceExample]:
    """The official ``hellaswag_val.jsonl``, the cleaned ``hellaswag_val_full.txt`` or ``Rowan/hellaswag``.

    The jsonl and the Hub rows give the original prompts exactly. The text file (6 lines per task:
    context, label, 4 endings) has lost the ``ctx_a`` / ``ctx_b`` split, so its contexts keep ``ctx_b``
    as it was, uncapitalised.
    """
    hub = HubDataset("Rowan/hellaswag", "validation")
    path = source.resolve("hellaswag", "hellaswag", "hellaswag_val.jsonl", "hellaswag_val_full.txt", hub=hub)
    if path is None or path.suffix == ".jsonl":
        rows = source.hub_rows("hellaswag", hub) if path is None else read_jsonl(path)
        where = path or "Hub"
        examples = []
        for n, row in enumerate(rows):
            require_fields("hellaswag", where, n + 1, row, ("activity_label", "ctx_a", "ctx_b", "endings", "label"))
            examples.append(hellaswag_example(n, hellaswag_context(row), [clean_hellaswag(e) for e in row["endings"]],
                                              _label("hellaswag", where, n + 1, row["label"], 4, 0)))
        return examples
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise UserInputError(f"task hellaswag: {path} has {len(lines)} lines; expected 6 per task")
    return [
        hellaswag_example(n, lines[i], lines[i + 2 : i + 6], _label("hellaswag", path, n, lines[i + 1], 4, 0))
        for n, i in enumerate(range(0, len(lines), 6))
    ]


def winogrande_example(number: int, prefix: str, options: list[str], suffix: str, gold: int) -> ChoiceExample:
    """The sentence is ``prefix + option + " " + suffix``. Original: the prefix is given and the option plus
    the suffix are scored, each tokenized on its own without special tokens; harness (partial scoring):
    ``prefix + option`` is given and only ``" " + suffix`` is scored."""
    original = tuple((Piece(prefix), Piece(option, scored=True), Piece(suffix, scored=True)) for option in options)
    harness = tuple((prefix + option, " " + suffix) for option in options)
    return ChoiceExample(f"winogrande/{number}", original, harness, gold)


def split_options(first: str, second: str) -> tuple[str, str, str]:
    """``(prefix, option1, option2)`` from two sentence beginnings that differ only in the filled option.

    The prefix is their common beginning, cut back to a word boundary (``Sam``/``Sarah`` share ``Sa``).
    It is the original prefix unless both options start with the same word(s), which then count as prefix.
    """
    common = 0
    while common < min(len(first), len(second)) and first[common] == second[common]:
        common += 1
    while common > 0 and not first[common - 1].isspace():
        common -= 1
    return first[:common], first[common:], second[common:]


def load_winogrande(source: DataSource) -> list[ChoiceExample]:
    """MosaicML ``winogrande.jsonl`` (context_options, continuation, gold) or ``allenai/winogrande`` xl."""
    hub = HubDataset("allenai/winogrande", "validation", "winogrande_xl")
    path = source.resolve("winogrande", "winogrande", "winogrande.jsonl", hub=hub)
    examples = []
    if path is None:
        for n, row in enumerate(source.hub_rows("winogrande", hub)):
            blank = row["sentence"].index("_")
            examples.append(winogrande_example(n, row["sentence"][:blank], [row["option1"], row["option2"]],
                                               row["sentence"][blank + 1 :].strip(),
                                               _label("winogrande", "Hub", n, row["answer"], 2, 1)))
        return examples
    for n, row in enumerate(read_jsonl(path)):
        require_fields("winogrande", path, n + 1, row, ("context_options", "continuation", "gold"))
        if len(row["context_options"]) != 2:
            raise UserInputError(f"task winogrande: record {n + 1} of {path} needs 2 context_options")
        prefix, first, second = split_options(*row["context_options"])
        examples.append(winogrande_example(n, prefix, [first, second], row["continuation"].strip(),
                                           _label("winogrande", path, n + 1, row["gold"], 2, 0)))
    return examples


def _load_labelled(source: DataSource, task: str, folder: str, files: tuple[str, str], hub: HubDataset,
                   fields: tuple[str, ...], choices: int, base: int, build) -> list[ChoiceExample]:
    """A JSON Lines file plus a line-aligned labels file (labels ``base`` .. ``base + choices - 1``)."""
    path = source.resolve(task, folder, files[0], hub=hub)
    if path is None:
        rows = source.hub_rows(task, hub)
        return [build(n, row, _label(task, "Hub", n, row["label"], choices, base)) for n, row in enumerate(rows)]
    rows = read_jsonl(path)
    labels = _aligned_labels(task, rows, source.require(task, folder, files[1]))
    for n, row in enumerate(rows):
        require_fields(task, path, n + 1, row, fields)
    return [build(n, row, _label(task, path, n + 1, label, choices, base))
            for n, (row, label) in enumerate(zip(rows, labels))]


def _piqa(number: int, row: dict[str, Any], gold: int) -> ChoiceExample:
    """Original: ``encode("Question: <goal>\\nAnswer: ") + encode(" " + solution)``, both with special tokens."""
    question = f"Question: {row['goal']}\nAnswer: "
    solutions = (row["sol1"], row["sol2"])
    original = tuple((Piece(question, special_tokens=True), Piece(" " + sol, special_tokens=True, scored=True))
                     for sol in solutions)
    harness = tuple((question.rstrip(" "), " " + sol) for sol in solutions)
    return ChoiceExample(f"piqa/{number}", original, harness, gold)


def load_piqa(source: DataSource) -> list[ChoiceExample]:
    """``valid.jsonl`` + ``valid-labels.lst`` (0 = sol1) or ``ybisk/piqa``."""
    return _load_labelled(source, "piqa", "piqa", ("valid.jsonl", "valid-labels.lst"),
                          HubDataset("ybisk/piqa", "validation"), ("goal", "sol1", "sol2"), 2, 0, _piqa)


def _siqa(number: int, row: dict[str, Any], gold: int) -> ChoiceExample:
    """Original: ``encode("Question: <context> <question>\\nAnswer: ") + encode(answer)``, no special tokens."""
    question = f"Question: {row['context']} {row['question']}\nAnswer: "
    answers = (row["answerA"], row["answerB"], row["answerC"])
    original = tuple((Piece(question), Piece(answer, scored=True)) for answer in answers)
    harness = tuple((question.rstrip(" "), " " + answer) for answer in answers)
    return ChoiceExample(f"siqa/{number}", original, harness, gold)


def load_siqa(source: DataSource) -> list[ChoiceExample]:
    """``dev.jsonl`` + ``dev-labels.lst`` (1-based) or ``allenai/social_i_qa``."""
    return _load_labelled(source, "siqa", "social_iqa", ("dev.jsonl", "dev-labels.lst"),
                          HubDataset("allenai/social_i_qa", "validation"),
                          ("context", "question", "answerA", "answerB", "answerC"), 3, 1, _siqa)


def _choice_task(name: str, column: str, loader) -> Task:
    return Task(name, column, ("accuracy",), loader,
                lambda engine, examples, settings, indices=None: evaluate_choices(name, engine, examples, settings),
                ACCURACY)


TASKS = (
    _choice_task("hellaswag", "HSwag", load_hellaswag),
    _choice_task("winogrande", "Wino", load_winogrande),
    _choice_task("siqa", "SIQA", load_siqa),
    _choice_task("piqa", "PIQA", load_piqa),
)
