"""The final table, laid out as the paper's Table 1 (percentages, one decimal, "-" for tasks not run)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .tasks import TASKS


def _cell(metrics: Mapping[str, float] | None, names: tuple[str, ...]) -> str:
    if metrics is None:
        return "-"
    return "/".join(f"{100 * metrics[name]:.1f}" for name in names)


def paper_table(model: str, results: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table: the paper's columns in its order, then any extra task that was run."""
    tasks = [task for task in TASKS.values() if task.in_paper or task.name in results]
    header = ["model", *(task.column for task in tasks)]
    row = [model, *(_cell(results.get(task.name, {}).get("metrics"), task.metrics) for task in tasks)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|",
             "| " + " | ".join(row) + " |"]
    return "\n".join(lines)
