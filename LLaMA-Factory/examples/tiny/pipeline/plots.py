"""Plot the training loss of each stage from its ``trainer_state.json`` into one PNG per stage.

    python plots.py --stage pt=output/tiny/pt --stage ddm=output/tiny/ddm --out ../example_output
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from llamafactory.entry_points import run_command  # noqa: E402
from llamafactory.train.plotting import loss_history  # noqa: E402

logger = logging.getLogger(__name__)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", type=_stage, action="append", required=True,
                        help="NAME=OUTPUT_DIR of a finished stage (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="folder for loss_<NAME>.png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def action() -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, folder in args.stage:
            points = loss_history(folder)
            plot_loss(name, points, args.out / f"loss_{name}.png")
            logger.info("stage %s: loss %.3f -> %.3f over %d steps", name, points[0][1], points[-1][1], points[-1][0])

    return run_command(action)


if __name__ == "__main__":
    sys.exit(main())
