"""Variance of the two multiple-choice likelihood estimators, measured side by side over seeds.

    python -m benchmarks.bench_scorer_variance                  # the bundled tiny DiffuGPT, T = 32, 10 seeds
    python -m benchmarks.bench_scorer_variance --steps 8 --seeds 50

Both estimators (docs/design.md#likelihood-scoring) score the same multiple-choice questions, built from the
synthetic world the bundled model was trained on (capitals, sums, repeated colours), once per seed:
``original`` masks each continuation token with probability t/T per level, ``exact`` masks ceil(n t/T) of
them. Each question is scored twice: with short choices (2-8 tokens) and with every choice followed by
the same scored tail of about 14 tokens (as WinoGrande's original protocol scores option + rest of the
sentence). The script prints, per estimator, the standard deviation of a choice's score across seeds (mean
over choices; also relative to the score), how often a question's chosen answer changes with the seed, and
the accuracy's spread.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from dlm_eval import DiffusionEngine
from dlm_eval.text import encode_pair
from llamafactory.ddm import ESTIMATORS, load_diffusion_lm

from .tiny_pipeline import REPO, pipeline_module

SYNTHETIC = pipeline_module("synthetic")
CAPITALS, COLORS, NAMES, THINGS = SYNTHETIC.CAPITALS, SYNTHETIC.COLORS, SYNTHETIC.NAMES, SYNTHETIC.THINGS


def questions(count: int, seed: int) -> list[tuple[str, list[str], int]]:
    """``(context, choices, gold)``: facts, sums and echoes, four choices each, the right one at a random place."""
    generator = torch.Generator().manual_seed(seed)

    def pick(options: list[str], k: int) -> list[str]:
        return [options[i] for i in torch.randperm(len(options), generator=generator)[:k].tolist()]

    made = []
    for index in range(count):
        kind = index % 3
        if kind == 0:
            country = pick(sorted(CAPITALS), 1)[0]
            right = CAPITALS[country]
            wrong = pick([c for c in CAPITALS.values() if c != right], 3)
            context, choices = f"the capital of {country} is", [f" {c} ." for c in [right, *wrong]]
        elif kind == 1:
            a, b = (int(x) for x in torch.randint(0, 5, (2,), generator=generator))
            wrong = pick([n for n in range(10) if n != a + b], 3)
            context, choices = f"{a} plus {b} is", [f" {n} ." for n in [a + b, *wrong]]
        else:
            name, color, thing = pick(NAMES, 1)[0], *pick(COLORS, 1), pick(THINGS, 1)[0]
            wrong = pick([c for c in COLORS if c != color], 3)
            context = f"{name} keeps"
            choices = [f" {color} {thing} and the {thing} are {c} ." for c in [color, *wrong]]
        gold = int(torch.randint(0, 4, (1,), generator=generator))
        choices.insert(gold, choices.pop(0))
        made.append((context, choices, gold))
    return made


TAIL = " 3 plus 4 is 7 . the capital of peru is lima . 2 plus 2 is 4 ."


def measure(engine: DiffusionEngine, made, pairs, args: argparse.Namespace, label: str) -> dict[str, float]:
    """Prints one line per estimator; returns each one's score sd (mean over choices)."""
    lengths = [len(continuation) for _, continuation in pairs]
    print(f"{label}: continuations of {min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.1f})")
    spread = {}
    for estimator in ESTIMATORS:
        runs = [engine.score(pairs, steps=args.steps, seed=seed, estimator=estimator, desc=estimator)
                for seed in range(args.seeds)]
        per_choice = [statistics.pstdev(run[i] for run in runs) for i in range(len(pairs))]
        relative = statistics.mean(sd / statistics.mean(run[i] for run in runs) for i, sd in enumerate(per_choice))
        picks = [[min(range(4), key=lambda c, q=q: run[4 * q + c]) for q in range(len(made))] for run in runs]
        unstable = sum(len({p[q] for p in picks}) > 1 for q in range(len(made))) / len(made)
        accuracy = [sum(p[q] == made[q][2] for q in range(len(made))) / len(made) for p in picks]
        spread[estimator] = statistics.mean(per_choice)
        print(f"  {estimator:<9} score sd {spread[estimator]:.4f} ({100 * relative:4.1f}% of the score)   "
              f"answer changes with the seed: "
              f"{100 * unstable:4.1f}% of questions   accuracy {100 * statistics.mean(accuracy):5.1f} "
              f"+- {100 * statistics.pstdev(accuracy):.1f}")
    print(f"  score sd ratio original / exact: {spread['original'] / spread['exact']:.2f}")
    return spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "assets" / "diffugpt-tiny"))
    parser.add_argument("--questions", type=int, default=36)
    parser.add_argument("--steps", type=int, default=32, help="noise levels T")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    model, tokenizer = load_diffusion_lm(args.model, device="cpu")
    engine = DiffusionEngine(model, tokenizer, batch_size=args.batch_size)
    made = questions(args.questions, seed=0)
    print(f"model: {args.model}; {len(made)} questions x 4 choices; T = {args.steps}; {args.seeds} seeds")
    for label, tail in (("short choices", ""), ("choices + shared tail", TAIL)):
        pairs = [encode_pair(tokenizer, context, choice + tail) for context, choices, _ in made for choice in choices]
        measure(engine, made, pairs, args, label)


if __name__ == "__main__":
    main()
