"""Load the selected tasks, evaluate them on one engine (in one process or several), and save as they go.

``<output_dir>/<task>.jsonl`` holds one record per example, in example order; ``<output_dir>/results.json``
the metrics, the settings and command-line configuration each task used, its speed, and the paper-layout
table. Both are rewritten atomically after every task.

Several processes (``torchrun`` / ``accelerate launch``) split each task by example index (process r takes
r, r + N, ...); every example's sampler seed depends on its index alone, so the records are those of one
process. The main process gathers them and writes the files.

While a task runs, each process saves the records it finished every ``save_every`` examples under
``<output_dir>/partial/<task>/`` (``TaskProgress``). A later run with the same model, task and settings
(``run_identity``) continues from there and skips tasks already finished; one with other settings is refused
before the model loads (``check_results_dir``) unless ``resume`` is off, which starts the task over.

Runs into one ``--output_dir`` add up per task: a task evaluated again replaces its own entry, the
other tasks' entries stay. An ``--output_dir`` holding another model's results is refused before the
model loads.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llamafactory.errors import UserInputError
from llamafactory.utils.distributed import SINGLE_PROCESS, Launch, barrier, gather_to_main, shard_indices
from llamafactory.utils.files import atomic_write_text, check_writable_folder

from .data import DataSource
from .engine import Decoding, Engine, GenerationMeter
from .report import paper_table
from .tasks import Settings, Task
from .tasks.base import field_means

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
PARTIAL_DIR = "partial"
# The configuration keys that say which model was evaluated: results of different values never mix.
MODEL_KEYS = ("model_name", "base_model_name", "adapter")
# Flags that change how a run proceeds but not its results: a run resumed with other values continues.
RUN_ONLY_KEYS = ("tasks", "batch_size", "output_dir", "code_workers", "resume", "save_every")


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


def _normal(value: Any) -> Any:
    """A configuration value as compared across runs: local paths made absolute (``out/m`` = ``/abs/out/m``)."""
    if isinstance(value, list):
        return [_normal(item) for item in value]
    if isinstance(value, str) and Path(value).exists():
        return str(Path(value).resolve())
    return value


def _model_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The model-defining settings."""
    return {key: _normal(config.get(key)) for key in MODEL_KEYS}


def run_identity(config: dict[str, Any], settings: Settings, decoding: Decoding) -> dict[str, Any]:
    """Everything a task's results depend on: the model, the flags but ``RUN_ONLY_KEYS``, the evaluation
    settings and the model family's sampler defaults; as JSON values, so a stored copy compares equal."""
    identity = {
        "config": {key: _normal(value) for key, value in sorted(config.items()) if key not in RUN_ONLY_KEYS},
        "settings": {key: value for key, value in asdict(settings).items() if key != "code_workers"},
        "decoding": decoding.as_dict(),
    }
    return json.loads(json.dumps(identity, sort_keys=True, default=str))


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every setting that differs between two run identities."""
    changed = []
    for section in sorted(set(old) | set(new)):
        before, after = old.get(section, {}), new.get(section, {})
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                changed.append(f"{key}: {before.get(key)!r} -> {after.get(key)!r}")
    return changed


class TaskProgress:
    """The examples an unfinished run of one task has finished: ``<output_dir>/partial/<task>/``.

    ``run.json`` holds the run identity, ``done.jsonl`` the records of earlier runs and ``rank<r>.jsonl``
    those process r of this run finished, rewritten atomically at every save (so a kill loses at most
    the examples since the last save). Lines are ``{"index": i, "record": {...}}``; ``settings.json`` holds
    the settings the task reported.
    """

    def __init__(self, output_dir: Path, task: str) -> None:
        self.folder = output_dir / PARTIAL_DIR / task

    def identity(self) -> dict[str, Any] | None:
        path = self.folder / "run.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def start(self, identity: dict[str, Any]) -> None:
        """Fold every saved record into ``done.jsonl`` and record ``identity`` (main process only)."""
        finished = self.finished()
        self.folder.mkdir(parents=True, exist_ok=True)
        write_jsonl(self.folder / "done.jsonl",
                    ({"index": index, "record": record} for index, record in sorted(finished.items())))
        for path in self.folder.glob("rank*.jsonl"):
            path.unlink()
        write_json(self.folder / "run.json", identity)

    def finished(self) -> dict[int, dict[str, Any]]:
        """Every saved record by example index."""
        records: dict[int, dict[str, Any]] = {}
        for name in ("done.jsonl", *sorted(p.name for p in self.folder.glob("rank*.jsonl"))):
            path = self.folder / name
            if path.is_file():
                for line in path.read_text(encoding="utf-8").splitlines():
                    entry = json.loads(line)
                    records[int(entry["index"])] = entry["record"]
        return records

    def save(self, rank: int, finished: Sequence[tuple[int, dict[str, Any]]], used: dict[str, Any]) -> None:
        write_jsonl(self.folder / f"rank{rank}.jsonl",
                    ({"index": index, "record": record} for index, record in finished))
        if not (self.folder / "settings.json").is_file():
            write_json(self.folder / "settings.json", used)

    def settings(self) -> dict[str, Any]:
        path = self.folder / "settings.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.folder.parent.is_dir() and not any(self.folder.parent.iterdir()):
            self.folder.parent.rmdir()


def check_results_dir(output_dir: Path, kind: str, config: dict[str, Any], *, identity: dict[str, Any] | None = None,
                      tasks: Sequence[Task] = (), resume: bool = True) -> None:
    """Before the model loads, refuse an ``--output_dir`` that cannot be written, holds another model's
    results, or (when resuming) holds an unfinished run of one of ``tasks`` with other settings."""
    check_writable_folder(output_dir, "--output_dir")
    previous_results(output_dir, kind, config)
    if not resume or identity is None:
        return
    for task in tasks:
        stored = TaskProgress(output_dir, task.name).identity()
        if stored is not None and stored != identity:
            changed = _differences(stored, identity)
            raise UserInputError(
                f"--output_dir {output_dir} holds an unfinished {task.name} run with other settings "
                f"({'; '.join(changed[:4])}{'; ...' if len(changed) > 4 else ''}): run with its settings to resume "
                "it, pass --no_resume to start it over, or choose another --output_dir"
            )


def _chunks(indices: Sequence[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(indices), size):
        yield list(indices[start : start + size])


def run_tasks(engine: Engine, tasks: Sequence[Task], examples: dict[str, list[Any]], settings: Settings, *,
              output_dir: Path, model: str, config: dict[str, Any], identity: dict[str, Any] | None = None,
              launch: Launch = SINGLE_PROCESS, resume: bool = True, save_every: int = 256) -> dict[str, Any]:
    """Evaluate each task in turn, this process's share of it; returns the results document the main
    process writes to ``results.json``, which keeps the entries of tasks evaluated by earlier runs."""
    if launch.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
    previous = previous_results(output_dir, engine.kind, config) or {}
    summary: dict[str, Any] = {"model": model, "engine": engine.kind, "config": config,
                               "tasks": dict(previous.get("tasks", {}))}
    for task in tasks:
        entry = summary["tasks"].get(task.name, {})
        if (resume and identity is not None and entry.get("identity") == identity
                and (output_dir / f"{task.name}.jsonl").is_file()):
            logger.info("%s: already evaluated with these settings in %s (--no_resume evaluates it again)",
                        task.name, output_dir)
            continue
        summary["tasks"][task.name] = _run_task(engine, task, examples[task.name], settings, output_dir=output_dir,
                                                config=config, identity=identity, launch=launch, resume=resume,
                                                save_every=save_every)
        summary["table"] = paper_table(model, summary["tasks"])
        if launch.is_main:
            write_json(output_dir / RESULTS_FILE, summary)
            metrics = summary["tasks"][task.name]["metrics"]
            logger.info("%s: %s", task.name, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        barrier()
    summary.setdefault("table", paper_table(model, summary["tasks"]))
    return summary


def _run_task(engine: Engine, task: Task, examples: list[Any], settings: Settings, *, output_dir: Path,
              config: dict[str, Any], identity: dict[str, Any] | None, launch: Launch, resume: bool,
              save_every: int) -> dict[str, Any]:
    """This process's share of one task, saved as it goes; on the main process, the task's results entry
    (the records written to ``<task>.jsonl``); elsewhere an empty entry."""
    started = time.perf_counter()
    progress = TaskProgress(output_dir, task.name)
    if launch.is_main:
        if not resume:
            progress.remove()
        progress.start(identity or {})
    barrier()
    done = progress.finished()
    if done:
        logger.info("%s: resuming, %d of %d examples already done", task.name, len(done), len(examples))
    mine = [i for i in shard_indices(len(examples), launch.world_size, launch.rank, pad=False) if i not in done]
    engine.meter = GenerationMeter()
    finished: list[tuple[int, dict[str, Any]]] = []
    used: dict[str, Any] | None = None
    for chunk in _chunks(mine, save_every):
        result = task.evaluate(engine, [examples[i] for i in chunk], settings, chunk)
        finished.extend(zip(chunk, result.examples))
        used = result.settings
        progress.save(launch.rank, finished, used)
    gathered = gather_to_main((finished, used, engine.meter), launch)
    if gathered is None:
        return {}
    records = dict(done)
    meter = GenerationMeter()
    for part, _, part_meter in gathered:
        records.update(part)
        meter.add(part_meter)
    ordered = [records[i] for i in range(len(examples))]
    used = next((part_used for _, part_used, _ in gathered if part_used is not None), None) or progress.settings()
    write_jsonl(output_dir / f"{task.name}.jsonl", ordered)
    entry = {"metrics": field_means(ordered, task.averages), "examples": len(ordered), "settings": used,
             "config": config, "identity": identity, "processes": launch.world_size,
             "seconds": round(time.perf_counter() - started, 2), **({"speed": meter.summary()} if meter.examples else {})}
    progress.remove()
    return entry
