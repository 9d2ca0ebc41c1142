"""ROCStories infilling: given sentences 1-2 and 4-5 (the right ending), generate sentence 3.

The paper infills the first 1,000 stories of the Story Cloze validation set, with the hole as long as
the reference sentence, and reports ROUGE-1/2/L F-measure (``rouge_score``, no stemming, averaged over
stories, in percent in the table). As in the original script, the prefix (sentences 1-2), the reference
and the suffix (sentence 4 and the ending) are each tokenized on their own, without special tokens or
joining spaces, and decoded by the original sampler with T = ``--diffusion_steps``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rouge_score import rouge_scorer

from llamafactory.errors import UserInputError

from ..data import DataSource, read_csv, require_fields
from ..engine import Engine, FillRequest
from ..text import encode, example_seed
from .base import Settings, Task, TaskResult, field_means, positions

_COLUMNS = ("InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4",
            "RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2", "AnswerRightEnding")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
ROUGE_MEANS = {name: name for name in ROUGE_TYPES}


@dataclass(frozen=True)
class InfillExample:
    id: str
    prefix: str
    middle: str  # the reference for the hole
    suffix: str


def load_rocstories(source: DataSource) -> list[InfillExample]:
    """``cloze_test_val__spring2016.csv``; the suffix holds sentence 4 and the right ending."""
    path = source.require("rocstories", "rocstories_cloze", "cloze_test_val__spring2016.csv")
    examples = []
    for n, row in enumerate(read_csv(path)):
        require_fields("rocstories", path, n + 1, row, _COLUMNS)
        choice = row["AnswerRightEnding"].strip()
        if choice not in ("1", "2"):
            raise UserInputError(
                f"task rocstories: AnswerRightEnding {choice!r} in row {n + 1} of {path}; expected 1 or 2"
            )
        ending = row[f"RandomFifthSentenceQuiz{choice}"]
        examples.append(InfillExample(
            row.get("InputStoryid", f"rocstories/{n}"),
            f"{row['InputSentence1']} {row['InputSentence2']}",
            row["InputSentence3"],
            f"{row['InputSentence4']} {ending}",
        ))
    return examples


def rouge(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    """Per-pair ROUGE-1/2/L F-measures."""
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)
    return [{name: score.fmeasure for name, score in scorer.score(ref, pred).items()}
            for pred, ref in zip(predictions, references)]


def evaluate_rocstories(engine: Engine, examples: list[InfillExample], settings: Settings,
                        indices: Sequence[int] | None = None) -> TaskResult:
    tokenizer = engine.tokenizer
    requests = []
    for index, example in zip(positions(examples, indices), examples):
        requests.append(FillRequest(encode(tokenizer, example.prefix), len(encode(tokenizer, example.middle)),
                                    encode(tokenizer, example.suffix), steps=settings.diffusion_steps,
                                    seed=example_seed(settings.seed, "rocstories", index)))
    decoding = settings.decoding(engine.decoding)
    holes = engine.fill(requests, decoding, desc="rocstories")
    predictions = [tokenizer.decode(hole, skip_special_tokens=True).strip() for hole in holes]
    scores = rouge(predictions, [example.middle for example in examples])
    records = [{"id": e.id, "reference": e.middle, "prediction": p, **s}
               for e, p, s in zip(examples, predictions, scores)]
    metrics = field_means(records, ROUGE_MEANS)
    used = {"seed": settings.seed, "diffusion_steps": settings.diffusion_steps, **decoding.as_dict()}
    return TaskResult(metrics, records, used if engine.kind == "diffusion" else {"decoding": "greedy, prefix only"})


TASKS = (Task("rocstories", "ROC R1/R2/RL", ROUGE_TYPES, load_rocstories, evaluate_rocstories, ROUGE_MEANS,
              default_limit=1000),)
