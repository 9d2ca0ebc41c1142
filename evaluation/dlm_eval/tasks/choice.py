"""Multiple choice: HellaSwag, WinoGrande, Social IQa and PIQA, answered by the lowest score.

Every example is a list of (context, continuation) pairs, one per choice. All pairs of all examples go
to the engine in one call, so the diffusion scorer batches across examples, choices and noise levels.
Prompt formats follow the harness conventions (the continuation carries the word-boundary space).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamafactory.errors import UserInputError

from ..data import DataSource, HubDataset, read_jsonl, read_lines, require_fields
from ..engine import Engine
from ..text import encode_pair
from .base import Settings, Task, TaskResult, mean


@dataclass(frozen=True)
class ChoiceExample:
    id: str
    pairs: tuple[tuple[str, str], ...]  # (context, continuation) per choice
    gold: int


def evaluate_choices(task: str, engine: Engine, examples: list[ChoiceExample], settings: Settings) -> TaskResult:
    """Accuracy of picking the lowest-scoring choice; per-example scores are kept."""
    pairs = [encode_pair(engine.tokenizer, context, continuation)
             for example in examples for context, continuation in example.pairs]
    scores = engine.score(pairs, steps=settings.diffusion_steps, seed=settings.seed, desc=task)
    records, offset = [], 0
    for example in examples:
        own = scores[offset : offset + len(example.pairs)]
        offset += len(example.pairs)
        prediction = min(range(len(own)), key=own.__getitem__)
        records.append({"id": example.id, "scores": own, "prediction": prediction, "gold": example.gold,
                        "correct": prediction == example.gold})
    used = {"diffusion_steps": settings.diffusion_steps, "seed": settings.seed} if engine.kind == "diffusion" else {}
    return TaskResult({"accuracy": mean([r["correct"] for r in records])}, records, used)


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
    """The harness's HellaSwag text cleaning (WikiHow bracket artifacts out, spacing fixed)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(number: int, context: str, endings: list[str], gold: int) -> ChoiceExample:
    return ChoiceExample(f"hellaswag/{number}", tuple((context, " " + ending) for ending in endings), gold)


def load_hellaswag(source: DataSource) -> list[ChoiceExample]:
    """``hellaswag_val_full.txt`` (6 lines per task: context, label, 4 endings) or ``Rowan/hellaswag``.

    Hub rows are cleaned into the text file's layout (``activity_label: ctx_a ctx_b``), so both sources
    give the same prompts.
    """
    hub = HubDataset("Rowan/hellaswag", "validation")
    path = source.resolve("hellaswag", "hellaswag", "hellaswag_val_full.txt", hub=hub)
    if path is None:
        rows = source.hub_rows("hellaswag", hub)
        return [
            _hellaswag(n, clean_hellaswag(f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b']}".rstrip()),
                       [clean_hellaswag(e) for e in row["endings"]], _label("hellaswag", "Hub", n, row["label"], 4, 0))
            for n, row in enumerate(rows)
        ]
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise UserInputError(f"task hellaswag: {path} has {len(lines)} lines; expected 6 per task")
    return [
        _hellaswag(n, lines[i], lines[i + 2 : i + 6], _label("hellaswag", path, n, lines[i + 1], 4, 0))
        for n, i in enumerate(range(0, len(lines), 6))
    ]


def _winogrande(number: int, contexts: list[str], continuation: str, gold: int) -> ChoiceExample:
    """Partial scoring: each option completes the context; the shared rest of the sentence is scored."""
    return ChoiceExample(f"winogrande/{number}", tuple((c, " " + continuation.strip()) for c in contexts), gold)


def load_winogrande(source: DataSource) -> list[ChoiceExample]:
    """MosaicML ``winogrande.jsonl`` (context_options, continuation, gold) or ``allenai/winogrande`` xl."""
    hub = HubDataset("allenai/winogrande", "validation", "winogrande_xl")
    path = source.resolve("winogrande", "winogrande", "winogrande.jsonl", hub=hub)
    if path is None:
        rows = source.hub_rows("winogrande", hub)
        examples = []
        for n, row in enumerate(rows):
            blank = row["sentence"].index("_")
            head = row["sentence"][:blank]
            gold = _label("winogrande", "Hub", n, row["answer"], 2, 1)
            examples.append(_winogrande(n, [head + row["option1"], head + row["option2"]],
                                        row["sentence"][blank + 1 :], gold))
        return examples
    examples = []
    for n, row in enumerate(read_jsonl(path)):
        require_fields("winogrande", path, n + 1, row, ("context_options", "continuation", "gold"))
        if len(row["context_options"]) != 2:
            raise UserInputError(f"task winogrande: record {n + 1} of {path} needs 2 context_options")
        examples.append(_winogrande(n, row["context_options"], row["continuation"],
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
    context = f"Question: {row['goal']}\nAnswer:"
    return ChoiceExample(f"piqa/{number}", ((context, " " + row["sol1"]), (context, " " + row["sol2"])), gold)


def load_piqa(source: DataSource) -> list[ChoiceExample]:
    """``valid.jsonl`` + ``valid-labels.lst`` (0 = sol1) or ``ybisk/piqa``."""
    return _load_labelled(source, "piqa", "piqa", ("valid.jsonl", "valid-labels.lst"),
                          HubDataset("ybisk/piqa", "validation"), ("goal", "sol1", "sol2"), 2, 0, _piqa)


def _siqa(number: int, row: dict[str, Any], gold: int) -> ChoiceExample:
    context = f"Question: {row['context']} {row['question']}\nAnswer:"
    answers = (row["answerA"], row["answerB"], row["answerC"])
    return ChoiceExample(f"siqa/{number}", tuple((context, " " + answer) for answer in answers), gold)


def load_siqa(source: DataSource) -> list[ChoiceExample]:
    """``dev.jsonl`` + ``dev-labels.lst`` (1-based) or ``allenai/social_i_qa``."""
    return _load_labelled(source, "siqa", "social_iqa", ("dev.jsonl", "dev-labels.lst"),
                          HubDataset("allenai/social_i_qa", "validation"),
                          ("context", "question", "answerA", "answerB", "answerC"), 3, 1, _siqa)


def _choice_task(name: str, column: str, loader) -> Task:
    return Task(name, column, ("accuracy",), loader,
                lambda engine, examples, settings: evaluate_choices(name, engine, examples, settings))


TASKS = (
    _choice_task("hellaswag", "HSwag", load_hellaswag),
    _choice_task("winogrande", "Wino", load_winogrande),
    _choice_task("siqa", "SIQA", load_siqa),
    _choice_task("piqa", "PIQA", load_piqa),
)
