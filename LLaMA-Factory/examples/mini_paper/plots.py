"""The mini-paper pipeline's two figures, drawn from the content of ``results.json``.

* validation loss of every diffusion run (ELBO bound, nats per token) against its diffusion steps, and
  against total training steps (AR + diffusion), with the AR base's exact validation NLL for scale;
* generative perplexity against the number of reverse steps T, unconditional and prefix-conditioned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import FuncFormatter  # noqa: E402

PLAIN_NUMBERS = FuncFormatter(lambda value, _: f"{value:g}")  # 300, not 3 x 10^2, on log axes

DPI = 110


def _save(figure: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_validation(results: dict[str, Any], path: Path) -> None:
    """Validation curves of the diffusion runs: by diffusion step (left) and by total training step (right)."""
    figure, (by_diffusion, by_total) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=DPI, sharey=True)
    ar = next(m for m in results["models"] if m["kind"] == "autoregressive")
    ar_steps, ar_losses = zip(*ar["validation"])
    trained = []  # values after step 0: the initial weights score far worse and would flatten the curves
    for model in results["models"]:
        if model["kind"] != "diffusion":
            continue
        steps, losses = zip(*model["validation"])
        trained += [loss for step, loss in model["validation"] if step > 0]
        start = f" (step 0: {losses[0]:.2f})" if steps[0] == 0 else ""
        line = by_diffusion.plot(steps, losses, marker=".", linewidth=1.2, label=model["label"] + start)[0]
        by_total.plot([s + model["ar_steps"] for s in steps], losses, marker=".", linewidth=1.2, color=line.get_color())
    trained += [loss for step, loss in ar["validation"] if step > 0]
    by_diffusion.set_ylim(min(trained) - 0.1, max(trained) + 0.25)
    by_total.plot(ar_steps, ar_losses, color="black", linestyle="--", linewidth=1, label="AR base (`pt`), exact NLL")
    by_diffusion.axhline(ar_losses[-1], color="black", linestyle=":", linewidth=1, label="AR base, final exact NLL")
    by_diffusion.set(title="validation loss by diffusion training step", xlabel="diffusion optimiser step",
                     ylabel="validation NLL bound (nats/token)")
    by_total.set(title="by total training step (AR + diffusion)", xlabel="optimiser step, AR + diffusion")
    for axes in (by_diffusion, by_total):
        axes.grid(alpha=0.3)
    by_diffusion.legend(fontsize=8)
    by_total.legend(fontsize=8)
    _save(figure, path)


def plot_generation(results: dict[str, Any], path: Path) -> None:
    """Generative perplexity (log scale) against T for each diffusion model; the AR base's samples and the
    held-out text as horizontal references."""
    conditions = ("unconditional", "prefix")
    figure, panels = plt.subplots(1, 2, figsize=(11, 4.2), dpi=DPI, sharey=True)
    ar = next(m for m in results["models"] if m["kind"] == "autoregressive")
    for axes, condition in zip(panels, conditions):
        labels: list[str] = []
        for model in results["models"]:
            if model["kind"] != "diffusion":
                continue
            cells = model["generation"][condition]
            labels = list(cells)
            axes.plot(range(len(labels)), [cells[t]["gen_ppl"] for t in labels], marker="o", linewidth=1.2,
                      label=model["label"])
        axes.axhline(ar["generation"][condition]["ar"]["gen_ppl"], color="black", linestyle="--", linewidth=1,
                     label="AR base samples")
        axes.axhline(results["reference"][condition]["gen_ppl"], color="gray", linestyle=":", linewidth=1,
                     label="held-out text")
        axes.set_xticks(range(len(labels)), [f"T = {t}" for t in labels])
        axes.set(title=f"{condition} generation", xlabel="reverse diffusion steps T",
                 ylabel="generative perplexity under the AR base", yscale="log")
        axes.yaxis.set_major_formatter(PLAIN_NUMBERS)
        axes.yaxis.set_minor_formatter(PLAIN_NUMBERS)
        axes.grid(alpha=0.3, which="both")
    panels[0].legend(fontsize=8)
    _save(figure, path)
