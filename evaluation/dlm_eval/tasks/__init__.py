"""The task registry: the paper's nine benchmarks (plus LAMBADA's OpenAI variant and SQuAD), in table order."""

from __future__ import annotations

from llamafactory.errors import UserInputError

from . import choice, gsm8k, humaneval, lambada, rocstories, triviaqa
from .base import PROMPT_FORMATS, Settings, Task, TaskResult

TASKS: dict[str, Task] = {
    task.name: task
    for task in (*triviaqa.TASKS, *lambada.TASKS, *choice.TASKS, *gsm8k.TASKS, *rocstories.TASKS, *humaneval.TASKS)
}
PAPER_TASKS = tuple(name for name, task in TASKS.items() if task.in_paper)


def select_tasks(spec: str) -> list[Task]:
    """``all`` (the paper's nine) or a comma-separated list of task names, in the order given."""
    names = list(PAPER_TASKS) if spec.strip() == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [name for name in names if name not in TASKS]
    if unknown or not names:
        raise UserInputError(
            f"unknown task(s) {', '.join(unknown) or '(none given)'}; expected 'all' or names from: {', '.join(TASKS)}"
        )
    return [TASKS[name] for name in dict.fromkeys(names)]


__all__ = ["PAPER_TASKS", "PROMPT_FORMATS", "TASKS", "Settings", "Task", "TaskResult", "select_tasks"]
