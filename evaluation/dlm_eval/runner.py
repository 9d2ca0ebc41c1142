"""Load the selected tasks, evaluate them on one engine, and write the results as they come.

``<output_dir>/<task>.jsonl`` holds one record per example; ``<output_dir>/results.json`` the metrics,
the settings each task used, the run configuration and the paper-layout table. Both are rewritten
atomically after every task, so an interrupted run keeps the tasks already finished.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from llamafactory.utils.files import atomic_write_text

from .data import DataSource
from .engine import Engine
from .report import paper_table
from .tasks import Settings, Task

logger = logging.getLogger(__name__)


def load_examples(tasks: Sequence[Task], source: DataSource, limit: int | None) -> dict[str, list[Any]]:
    """Every task's records, cut to ``limit`` (else to the paper's subset, e.g. 1,000 ROCStories)."""
    loaded = {}
    for task in tasks:
        records = task.load(source)
        keep = limit if limit is not None else task.default_limit
        loaded[task.name] = records[:keep] if keep is not None else records
        logger.info("%s: %d of %d records", task.name, len(loaded[task.name]), len(records))
    return loaded


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, (json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def run_tasks(engine: Engine, tasks: Sequence[Task], examples: dict[str, list[Any]], settings: Settings, *,
              output_dir: Path, model: str, config: dict[str, Any]) -> dict[str, Any]:
    """Evaluate each task in turn; returns the results document also written to ``results.json``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"model": model, "engine": engine.kind, "config": config, "tasks": {}}
    for task in tasks:
        started = time.perf_counter()
        result = task.evaluate(engine, examples[task.name], settings)
        write_jsonl(output_dir / f"{task.name}.jsonl", result.examples)
        summary["tasks"][task.name] = {"metrics": result.metrics, "examples": len(result.examples),
                                       "settings": result.settings,
                                       "seconds": round(time.perf_counter() - started, 2)}
        summary["table"] = paper_table(model, summary["tasks"])
        write_json(output_dir / "results.json", summary)
        logger.info("%s: %s", task.name, ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items()))
    return summary
