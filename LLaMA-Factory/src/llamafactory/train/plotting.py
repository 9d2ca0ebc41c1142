"""Loss curves from ``trainer_state.json`` as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from ..errors import UserInputError

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"


def trainer_state(output_dir: str | Path) -> Path:
    """A run's final ``trainer_state.json``, else the one of its latest checkpoint."""
    output_dir = Path(output_dir)
    final = output_dir / TRAINER_STATE
    if final.is_file():
        return final
    checkpoints = sorted(output_dir.glob(f"checkpoint-*/{TRAINER_STATE}"), key=lambda p: int(p.parent.name[11:]))
    if not checkpoints:
        raise UserInputError(f"{output_dir} holds no {TRAINER_STATE}; did the stage finish?")
    return checkpoints[-1]


def loss_history(output_dir: str | Path, key: str = "loss") -> list[tuple[int, float]]:
    """``(step, value)`` for every logged step of a run: the training ``loss``, or another logged key
    such as ``eval_loss``."""
    history = json.loads(trainer_state(output_dir).read_text(encoding="utf-8"))["log_history"]
    points = [(int(entry["step"]), float(entry[key])) for entry in history if key in entry]
    if not points:
        what = "training loss" if key == "loss" else key
        raise UserInputError(f"{output_dir}: no {what} was logged (set logging_steps / eval_steps)")
    return points


def smooth(values: list[float], weight: float = 0.6) -> list[float]:
    """Exponential moving average, so that noisy per-step losses show their trend."""
    out, last = [], values[0] if values else 0.0
    for value in values:
        last = weight * last + (1 - weight) * value
        out.append(last)
    return out


def plot_loss(output_dir: str | Path, keys: tuple[str, ...] = ("loss", "eval_loss")) -> list[Path]:
    """Write ``training_<key>.png`` for each logged key; returns the written files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    state_file = Path(output_dir) / TRAINER_STATE
    history = json.loads(state_file.read_text(encoding="utf-8")).get("log_history", [])
    written = []
    for key in keys:
        points = [(entry["step"], entry[key]) for entry in history if key in entry and math.isfinite(entry[key])]
        if not points:
            logger.info("no '%s' in the training log: nothing to plot", key)
            continue
        steps, values = zip(*points)
        figure = plt.figure()
        plt.plot(steps, values, color="#1f77b4", alpha=0.4, label="original")
        plt.plot(steps, smooth(list(values)), color="#1f77b4", label="smoothed")
        plt.title(f"{key} of {Path(output_dir).name}")
        plt.xlabel("step")
        plt.ylabel(key)
        plt.legend()
        path = Path(output_dir) / f"training_{key.replace('/', '_')}.png"
        figure.savefig(path, format="png", dpi=100)
        plt.close(figure)
        written.append(path)
        logger.info("loss plot saved to %s", path)
    return written
