"""Collect the mini-paper pipeline's measurements into ``results.json`` and render ``results.md`` from it.

``results.json`` holds everything the table and the plots show: the run's command, seed, text source and
duration, the model shape, and per model what it was trained from and how (read from its checkpoint's
``trainer_state.json``), its measurements (``measure.py``) and its validation-loss curve. ``results.md``
is a pure function of ``results.json`` (``render``), so the committed table can be re-derived from it.
The two figures are drawn from ``results.json`` too:

* validation loss of every diffusion run (ELBO bound, nats per token) against its diffusion steps, and
  against total training steps (AR + diffusion), with the AR base's exact validation NLL for scale;
* generative perplexity against the number of reverse steps T, unconditional and prefix-conditioned.

A speed table sets the NFE per generated token and tokens per second of each model's T = n and threshold
cells beside the AR base's cached ``generate`` on the same prompts.

    python report.py --eval eval/ar.json eval/ddm-adapted.json ... --source data/source.json --seed 0 \\
        --command "bash examples/mini_paper/run.sh" --seconds 1800 --out ../example_output/mini_paper
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import unicodedata
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.ticker import FuncFormatter  # noqa: E402
from transformers import AutoConfig  # noqa: E402

from llamafactory.entry_points import run_command  # noqa: E402
from llamafactory.errors import UserInputError  # noqa: E402
from llamafactory.train.plotting import loss_history, trainer_state  # noqa: E402
from llamafactory.utils.files import atomic_write_text  # noqa: E402

logger = logging.getLogger(__name__)

CONDITIONS = {"unconditional": "unconditional (from the record separator)", "prefix": "continuing a held-out prefix"}
SAMPLE_CHARS = 400


def printable(text: str) -> str:
    """A sample as it can sit in a markdown code block and read back the same: control characters other than
    newline and tab (a ``\\r`` from a tiny model's bytes, say) are written as escapes."""
    return "".join(c if c in "\n\t" or not unicodedata.category(c).startswith("C") else ascii(c)[1:-1] for c in text)


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserInputError(f"{path} does not exist; did its pipeline step finish?")
    return json.loads(path.read_text(encoding="utf-8"))


def trained_steps(checkpoint: Path) -> int:
    return int(json.loads(trainer_state(checkpoint).read_text())["global_step"])


def label(model: dict[str, Any]) -> str:
    """The row name, from what the model is: AR base, adapted (and which ablation), or from scratch."""
    if model["kind"] == "autoregressive":
        return "AR base (`pt`)"
    if model["init"] == "init":
        return f"diffusion from scratch, {model['diffusion_steps']} steps"
    if model.get("block_size") is not None:
        return f"block diffusion, B = {model['block_size']}"
    missing = [part for part, on in (("shift", model["shift"]), ("annealing", model["anneal_steps"] > 1)) if not on]
    return "adapted: shift + annealing" if not missing else "adapted without " + " and ".join(missing)


def collect(evaluations: list[dict[str, Any]], source: dict[str, Any], seed: int, command: str,
            seconds: int) -> dict[str, Any]:
    """The content of ``results.json``."""
    ar = next((e for e in evaluations if e["kind"] == "autoregressive"), None)
    if ar is None:
        raise UserInputError("no measurement of the AR model among --eval (measure.py without --diffusion)")
    ar_steps = trained_steps(Path(ar["checkpoint"]))
    config = AutoConfig.from_pretrained(ar["checkpoint"])
    models = []
    for evaluation in evaluations:
        checkpoint = Path(evaluation["checkpoint"])
        steps = trained_steps(checkpoint)
        diffusion = evaluation["kind"] == "diffusion"
        model = {
            "name": evaluation["name"], "kind": evaluation["kind"], "init": evaluation["init"],
            "shift": evaluation.get("shift"), "anneal_steps": evaluation.get("anneal_steps"),
            "block_size": evaluation.get("block_size"),
            "ar_steps": ar_steps if (not diffusion or evaluation["init"] == "pt") else 0,
            "diffusion_steps": steps if diffusion else 0,
            "likelihood": evaluation["likelihood"], "infilling": evaluation.get("infilling"),
            "generation": evaluation["generation"], "samples": evaluation["samples"],
            "validation": loss_history(checkpoint, "eval_loss"),
        }
        model["label"] = label(model)
        models.append(model)
    return {
        "meta": {
            "command": command, "seed": seed, "seconds": seconds, "text": source,
            "model": {"n_layer": config.n_layer, "n_embd": config.n_embd, "n_head": config.n_head,
                      "n_positions": config.n_positions, "vocab_size": config.vocab_size},
            "evaluation": ar["settings"],
        },
        "models": models,
        "reference": ar["reference"],
    }


def table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    """A markdown table; ``align`` has one letter per column, ``l`` or ``r``."""
    rule = ["---" if a == "l" else "---:" for a in align]
    return ["| " + " | ".join(cells) + " |" for cells in (header, rule, *rows)]


def step_labels(models: list[dict[str, Any]]) -> list[str]:
    """The generation cells measured for the diffusion models, in order (a T, ``n`` = one step per token,
    ``threshold`` = the threshold rule)."""
    labels: list[str] = []
    for model in models:
        if model["kind"] == "diffusion":
            labels += [t for t in model["generation"]["unconditional"] if t not in labels]
    return sorted(labels, key=lambda t: (not t.isdigit(), int(t) if t.isdigit() else 0, t == "threshold"))


THRESHOLD_CELL = "threshold 0.9"


def cell_name(label: str) -> str:
    return THRESHOLD_CELL if label == "threshold" else f"T = {label}"


def quality(cell: dict[str, float] | None) -> str:
    return "—" if cell is None else f"{cell['gen_ppl']:.1f} / {cell['entropy']:.2f}"


def speed_rows(results: dict[str, Any]) -> list[list[str]]:
    """Per model and cell, both conditions together: NFE per generated token, tokens per second, and tokens
    per second as a multiple of the AR base's cached ``generate``."""
    def pooled(cells: list[dict[str, float]]) -> tuple[float, float]:
        tokens = sum(c["tokens"] for c in cells)
        return sum(c["nfe"] for c in cells) / tokens, tokens / sum(c["seconds"] for c in cells)

    ar = next(m for m in results["models"] if m["kind"] == "autoregressive")
    _, ar_speed = pooled([ar["generation"][cond]["ar"] for cond in CONDITIONS])
    rows = [[ar["label"], "cached `generate`", "1.00", f"{ar_speed:.0f}", "1.00x"]]
    for model in results["models"]:
        if model["kind"] != "diffusion":
            continue
        for label in ("n", "threshold"):
            nfe, speed = pooled([model["generation"][cond][label] for cond in CONDITIONS])
            how = ("exact block cache" if model["block_size"] is not None else "no cache") + ", " + cell_name(label)
            rows.append([model["label"], how, f"{nfe:.2f}", f"{speed:.0f}", f"{speed / ar_speed:.2f}x"])
    return rows


def render(results: dict[str, Any]) -> str:
    """``results.md`` from the content of ``results.json``."""
    meta, models = results["meta"], results["models"]
    text, shape, settings = meta["text"], meta["model"], meta["evaluation"]
    steps = step_labels(models)
    lines = [
        "# Adapted vs from-scratch diffusion on real text (mini-paper pipeline)", "",
        f"`{meta['command']}` (seed {meta['seed']}, {meta['seconds']} s to this report). Text: {text['description']}; "
        f"documents {text['documents']['train']} train / {text['documents']['test']} held out "
        f"({text['characters']['train']:,} / {text['characters']['test']:,} characters). Every model is a GPT-2 of "
        f"{shape['n_layer']} layers, width {shape['n_embd']}, {shape['n_head']} heads, {shape['n_positions']} "
        f"positions, over a {shape['vocab_size']}-token byte-level BPE trained on the training documents.", "",
        "## Likelihood and infilling (held-out documents)", "",
    ]
    rows = []
    for m in models:
        diffusion = m["kind"] == "diffusion"
        like, infill = m["likelihood"], m["infilling"]
        block = m.get("block_size")
        rows.append([
            m["label"], "AR base" if m["init"] == "pt" else "random",
            ("on" if m["shift"] else "off") if diffusion else "—",
            (f"{m['anneal_steps']} steps" if m["anneal_steps"] > 1 else "none") if diffusion else "—",
            ("full" if block is None else str(block)) if diffusion else "—",
            str(m["ar_steps"]), str(m["diffusion_steps"]), str(m["ar_steps"] + m["diffusion_steps"]),
            f"{like['nll']:.3f}" + ("" if like["bound"] else " (exact)"), f"{like['perplexity']:.1f}",
            *(["n/a (no right context)"] * 2 if infill is None else
              [f"{infill['token_accuracy']:.1f}", f"{infill['exact_match']:.1f}"]),
        ])
    lines += table(["model", "init", "shift", "annealing", "block", "AR steps", "diffusion steps", "total steps",
                    "NLL ↓ (nats/token)", "PPL ↓", "infilling token acc. ↑ (%)", "infilling exact ↑ (%)"],
                   rows, "lllllrrrrrrr")
    lines += [
        "",
        f"NLL on the first {settings['windows']} held-out windows of {settings['window_tokens']} tokens, packed as in "
        "training (token 0 given, the rest scored). For the diffusion models it is the ELBO bound of "
        f"`llamafactory.ddm.sequence_nll` over {settings['levels']} fixed noise levels (seed {settings['seed']}): an "
        "**upper bound** on their true NLL, while the AR model's NLL is exact — the gap between the two is not all "
        "model quality; a block model's bound is the sum over blocks of each block's bound given the clean "
        "blocks before it (`block`: its size B; `full`: one diffusion over the whole window). Infilling: "
        f"{settings['spans']} spans of {settings['span_words']} whole words on one line in the middle of held-out sentences "
        f"(at least two words of the sentence on each side), {settings['context']} tokens of context on each side; "
        "diffusion models see both sides and fill greedily, most confident first, one step per token; the AR model "
        "sees only the prefix and decodes greedily. Token accuracy is position by position. A block model "
        "decodes left to right over blocks and its blocks attend only to blocks before them, so a span's right "
        "context beyond the current block is never seen: infilling is not something it does, and it is not "
        "measured.",
        "",
        "## Generation quality: generative perplexity under the AR base ↓ / unigram entropy (nats)", "",
    ]
    sampler = settings["sampler"]
    header = ["model"] + [f"{cond} {cell_name(t)}" for cond in CONDITIONS for t in steps]
    rows = []
    for m in models:
        if m["kind"] == "diffusion":
            cells = [quality(m["generation"][cond].get(t)) for cond in CONDITIONS for t in steps]
        else:
            cells = ["—" if t != "n" else quality(m["generation"][cond]["ar"]) for cond in CONDITIONS for t in steps]
        rows.append([m["label"]] + cells)
    rows.append(["held-out text"] + ["—" if t != "n" else quality(results["reference"][cond])
                                     for cond in CONDITIONS for t in steps])
    lines += table(header, rows, "l" + "r" * (len(header) - 1))
    lines += [
        "",
        f"{settings['samples']} sequences per cell, each filling a {settings['window_tokens']}-token window: "
        f"unconditional ones start from the record separator, prefixed ones continue the first "
        f"{settings['prompt_tokens']} tokens of a held-out window. `T = n`: one reverse step per generated token; "
        "the AR base and the held-out text appear there (left to right). "
        f"`{THRESHOLD_CELL}`: the same draws, but each step fixes every masked position whose sampled token has "
        "probability at least 0.9 (at least one; at most T = n steps). Block models decode block by block with "
        "their exact key/value cache (blocks of their own B) and have no T below the number of blocks. "
        "Sampler (`llamafactory.ddm.sample`): "
        f"strategy `{sampler['strategy']}`, temperature {sampler['temperature']}, top_p {sampler['top_p']}, greedy "
        f"{str(sampler['greedy']).lower()}; the AR base samples with the same temperature and top_p; every model "
        "draws with the same per-row seeds. Low entropy flags repetition; a generative perplexity far below the "
        "held-out text's with low entropy is a degenerate sample, not a good one.",
        "",
        "## Speed: model calls and tokens per second of generation", "",
    ]
    lines += table(["model", "decoding", "NFE per token ↓", "tokens / s ↑", "vs AR base"], speed_rows(results),
                   "llrrr")
    lines += [
        "",
        "Both conditions pooled (the generation cells above). NFE: denoiser (or decoder) forward passes per "
        "generated token. Each model was timed in its own measurement job on one CPU thread, with the pipeline's "
        "other jobs running beside it on the other cores, so the ratios are rough; the AR base samples with "
        "transformers' cached `generate`. `no cache`: a full-sequence model recomputes the whole window each step "
        "(the original recipe's decoding).",
        "",
    ]
    for cond, title in CONDITIONS.items():
        lines += [f"## Samples, {title} (the first sequence, T = n; the first {SAMPLE_CHARS} characters)", ""]
        if cond == "prefix":
            lines += ["Given:", "", "```text", printable(models[0]["samples"][cond]["prompt"]), "```", ""]
        for m in models:
            lines += [f"{m['label']}:", "", "```text", printable(m["samples"][cond]["text"][:SAMPLE_CHARS]), "```", ""]
    return "\n".join(lines).rstrip() + "\n"


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
    labels = step_labels(results["models"])
    for axes, condition in zip(panels, conditions):
        for model in results["models"]:
            if model["kind"] != "diffusion":
                continue
            cells = model["generation"][condition]
            at = [i for i, t in enumerate(labels) if t in cells]
            axes.plot(at, [cells[labels[i]]["gen_ppl"] for i in at], marker="o", linewidth=1.2, label=model["label"])
        axes.axhline(ar["generation"][condition]["ar"]["gen_ppl"], color="black", linestyle="--", linewidth=1,
                     label="AR base samples")
        axes.axhline(results["reference"][condition]["gen_ppl"], color="gray", linestyle=":", linewidth=1,
                     label="held-out text")
        axes.set_xticks(range(len(labels)), [cell_name(t) for t in labels])
        axes.set(title=f"{condition} generation", xlabel="reverse diffusion steps T, or the threshold rule",
                 ylabel="generative perplexity under the AR base", yscale="log")
        axes.yaxis.set_major_formatter(PLAIN_NUMBERS)
        axes.yaxis.set_minor_formatter(PLAIN_NUMBERS)
        axes.grid(alpha=0.3, which="both")
    panels[0].legend(fontsize=8)
    _save(figure, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval", type=Path, nargs="+", required=True, help="measure.py outputs, in table order")
    parser.add_argument("--source", type=Path, required=True, help="source.json of prepare_text.py")
    parser.add_argument("--seed", type=int, required=True, help="the pipeline's seed")
    parser.add_argument("--command", required=True, help="the command that ran the pipeline")
    parser.add_argument("--seconds", type=int, required=True, help="wall time of the pipeline so far")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json, results.md and the plots")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def action() -> None:
        results = collect([read_json(p) for p in args.eval], read_json(args.source), args.seed, args.command,
                          args.seconds)
        atomic_write_text(args.out / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(args.out / "results.md", render(results))
        plot_validation(results, args.out / "validation_loss.png")
        plot_generation(results, args.out / "generative_perplexity.png")
        logger.info("wrote results.json, results.md, validation_loss.png and generative_perplexity.png to %s", args.out)

    return run_command(action)


if __name__ == "__main__":
    sys.exit(main())
