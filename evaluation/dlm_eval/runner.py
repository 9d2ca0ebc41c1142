"""Load the selected tasks, evaluate them on one engine, and write the results as they come.

``<output_dir>/<task>.jsonl`` holds one record per example; ``<output_dir>/results.json`` the metrics,
the settings and command-line configuration each task used, and the paper-layout table. Both are
rewritten atomically after every task, so an interrupted run keeps the tasks already finished.

Runs into one ``--output_dir`` add up per task: a task evaluated again replaces its own entry, the
other tasks' entries stay. An ``--output_dir`` holding another model's results is refused before the
model loads (``check_results_dir``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from llamafactory.errors import UserInputError
from llamafactory.utils.files import atomic_write_text, check_writable_folder

from .data import DataSource
from .engine import Engine
from .report import paper_table
from .tasks import Settings, Task

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
# The configuration keys that say which model was evaluated: results of different values never mix.
MODEL_KEYS = ("model_name", "base_model_name", "adapter")


def load_examples(tasks: Sequence[Task], source: DataSource, limit: int | None) -> dict[str, list[Any]]:
    """Every task's records, cut to ``limit`` (else to the paper's subset, e.g. 1,000 ROCStories)."""
    loaded = {}
    for task in tasks:
        records = task.load(source)
        keep = limit if limit is not None else task.default_limit
        loaded[task.name] = records[:keep] if keep is not None else records
        if not loaded[task.name]:
            where = source.files.get(task.name, "its Hub split")
            raise UserInputError(f"task {task.name}: no examples in {where}")
        logger.info("%s: %d of %d records", task.name, len(loaded[task.name]), len(records))
    return loaded


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, (json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def previous_results(output_dir: Path, kind: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """The results an earlier run of the same model wrote into ``output_dir`` (None when there are none)."""
    path = output_dir / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserInputError(f"{path} is not valid JSON; move it away or choose another --output_dir") from None
    earlier = previous.get("config", {}) if isinstance(previous, dict) else {}
    if previous.get("engine") != kind or _model_identity(earlier) != _model_identity(config):
        raise UserInputError(
            f"--output_dir {output_dir} holds the results of another model ({earlier.get('model_name')!r}, "
            f"{previous.get('engine')}); results of {config.get('model_name')!r} would mix with them: "
            "choose another --output_dir"
        )
    return previous


def _model_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The model-defining settings, with local paths made absolute (``out/m`` and ``/abs/out/m`` agree)."""
    def normal(value: Any) -> Any:
        if isinstance(value, list):
            return [normal(item) for item in value]
        if isinstance(value, str) and Path(value).exists():
            return str(Path(value).resolve())
        return value

    return {key: normal(config.get(key)) for key in MODEL_KEYS}


def check_results_dir(output_dir: Path, kind: str, config: dict[str, Any]) -> None:
    """Refuse an ``--output_dir`` that cannot be written or holds another model's results, before the model loads."""
    check_writable_folder(output_dir, "--output_dir")
    previous_results(output_dir, kind, config)


def run_tasks(engine: Engine, tasks: Sequence[Task], examples: dict[str, list[Any]], settings: Settings, *,
              output_dir: Path, model: str, config: dict[str, Any]) -> dict[str, Any]:
    """Evaluate each task in turn; returns the results document also written to ``results.json``, which
    keeps the entries of tasks evaluated by earlier runs into ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    previous = previous_results(output_dir, engine.kind, config) or {}
    summary: dict[str, Any] = {"model": model, "engine": engine.kind, "config": config,
                               "tasks": dict(previous.get("tasks", {}))}
    for task in tasks:
        started = time.perf_counter()
        result = task.evaluate(engine, examples[task.name], settings)
        write_jsonl(output_dir / f"{task.name}.jsonl", result.examples)
        summary["tasks"][task.name] = {"metrics": result.metrics, "examples": len(result.examples),
                                       "settings": result.settings, "config": config,
                                       "seconds": round(time.perf_counter() - started, 2)}
        summary["table"] = paper_table(model, summary["tasks"])
        write_json(output_dir / RESULTS_FILE, summary)
        logger.info("%s: %s", task.name, ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items()))
    return summary
