"""HumanEval single-line infilling: fill the removed line, run the problem's tests, report pass@1.

The hole is as long as the canonical line (the paper's protocol; T = ``--diffusion_steps``); prompt,
canonical line and suffix are each tokenized on their own without special tokens, as in the original
script. Every program runs in the sandbox (:mod:`dlm_eval.sandbox`), never in this process; the settings
record which isolation layers it had.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..data import DataSource, read_jsonl, require_fields
from ..engine import Engine, FillRequest
from ..sandbox import Limits, capabilities, run_programs
from ..text import encode, example_seed
from .base import Settings, Task, TaskResult, field_means, positions

_FIELDS = ("task_id", "entry_point", "prompt", "suffix", "canonical_solution", "test")
PASS_AT_1 = {"pass@1": "passed"}
FILES = ("HumanEval-SingleLineInfilling.jsonl.gz", "HumanEval-SingleLineInfilling.jsonl")


@dataclass(frozen=True)
class CodeInfillExample:
    id: str
    prompt: str  # code before the hole
    suffix: str  # code after the hole
    canonical: str  # the removed line
    test: str  # defines check(candidate)
    entry_point: str


def load_humaneval(source: DataSource) -> list[CodeInfillExample]:
    """``HumanEval-SingleLineInfilling.jsonl.gz`` from openai/human-eval-infilling (or unzipped)."""
    path = source.require("humaneval", "humaneval_infilling", *FILES)
    examples = []
    for n, row in enumerate(read_jsonl(path)):
        require_fields("humaneval", path, n + 1, row, _FIELDS)
        examples.append(CodeInfillExample(row["task_id"], row["prompt"], row["suffix"], row["canonical_solution"],
                                          row["test"], row["entry_point"]))
    return examples


def program(example: CodeInfillExample, completion: str) -> str:
    """The file that is executed: the filled function, the tests, and the call that runs them."""
    return f"{example.prompt}{completion}{example.suffix}\n\n{example.test}\n\ncheck({example.entry_point})\n"


def evaluate_humaneval(engine: Engine, examples: list[CodeInfillExample], settings: Settings,
                       indices: Sequence[int] | None = None) -> TaskResult:
    tokenizer = engine.tokenizer
    requests = [
        FillRequest(encode(tokenizer, e.prompt), len(encode(tokenizer, e.canonical)),
                    encode(tokenizer, e.suffix), steps=settings.diffusion_steps,
                    seed=example_seed(settings.seed, "humaneval", index))
        for index, e in zip(positions(examples, indices), examples)
    ]
    decoding = settings.decoding(engine.decoding)
    holes = engine.fill(requests, decoding, desc="humaneval")
    completions = [tokenizer.decode(hole, skip_special_tokens=True) for hole in holes]
    limits = Limits(timeout=settings.code_timeout)
    results = run_programs([program(e, c) for e, c in zip(examples, completions)], limits,
                           workers=settings.code_workers, desc="humaneval tests")
    records = [{"id": e.id, "completion": c, "canonical": e.canonical, "status": r.status, "detail": r.detail,
                "passed": r.passed} for e, c, r in zip(examples, completions, results)]
    used = {"seed": settings.seed, "diffusion_steps": settings.diffusion_steps, **decoding.as_dict()}
    return TaskResult(field_means(records, PASS_AT_1), records,
                      {**(used if engine.kind == "diffusion" else {"decoding": "greedy, prefix only"}),
                       "timeout_s": settings.code_timeout, "sandbox": capabilities().as_dict()})


TASKS = (Task("humaneval", "Code", ("pass@1",), load_humaneval, evaluate_humaneval, PASS_AT_1),)
