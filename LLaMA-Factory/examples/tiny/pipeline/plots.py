"""Plot the training loss of each stage from its ``trainer_state.json`` into one PNG per stage.

    python plots.py --stage pt=output/tiny/pt --stage ddm=output/tiny/ddm --out ../example_output
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

logger = logging.getLogger(__name__)


def trainer_state(output_dir: Path) -> Path:
    """The run's final ``trainer_state.json``, else the one of its latest checkpoint."""
    final = output_dir / "trainer_state.json"
    if final.is_file():
        return final
    checkpoints = sorted(output_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name[11:]))
    if not checkpoints:
        raise SystemExit(f"{output_dir} holds no trainer_state.json; did the stage finish?")
    return checkpoints[-1]


def loss_history(output_dir: Path, key: str = "loss") -> list[tuple[int, float]]:
    """``(step, value)`` for every logged step of a stage: the training ``loss``, or another logged key
    such as ``eval_loss``."""
    history = json.loads(trainer_state(output_dir).read_text())["log_history"]
    points = [(int(entry["step"]), float(entry[key])) for entry in history if key in entry]
    if not points:
        what = "training loss" if key == "loss" else key
        raise SystemExit(f"{output_dir}: no {what} was logged (set logging_steps / eval_steps)")
    return points


def plot_loss(stage: str, points: list[tuple[int, float]], path: Path) -> None:
    steps, losses = zip(*points)
    figure, axes = plt.subplots(figsize=(5, 3.2), dpi=100)
    axes.plot(steps, losses, marker=".", linewidth=1)
    axes.set(title=f"training loss, stage {stage}", xlabel="optimiser step", ylabel="loss")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _stage(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=OUTPUT_DIR, got {text!r}")
    return name, Path(folder)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", type=_stage, action="append", required=True,
                        help="NAME=OUTPUT_DIR of a finished stage (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="folder for loss_<NAME>.png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, folder in args.stage:
        points = loss_history(folder)
        plot_loss(name, points, args.out / f"loss_{name}.png")
        logger.info("stage %s: loss %.3f -> %.3f over %d steps", name, points[0][1], points[-1][1], points[-1][0])


if __name__ == "__main__":
    main()
