"""A seeded synthetic corpus whose records make the abilities of a diffusion LM visible.

Every record is one short line of text built from a small closed vocabulary:

* ``fact``    "the capital of france is paris ." — a fixed lookup table, stated in one direction only;
* ``echo``    "tom keeps red boxes and the boxes are red ." — the first colour/thing pair is repeated;
* ``sum``     "3 plus 4 is 7 ." — addition with a one-digit sum;
* ``reverse`` "reverse k q z gives z q k ." — a letter sequence and its reversal;
* ``plain``   templated sentences with random fillers, so unconditional samples read like prose.

``fact``, ``echo`` and ``sum`` records have a *middle field* that only what follows it determines
(the country is fixed by its capital, the colour by its repetition, the second addend by the sum): a
left-to-right model that sees only the prefix can at best guess it, a diffusion model that sees both
sides can infer it. The same records cut before their last field test plain prefix completion, and
``reverse`` is the supervised task of the ``ddm-sft`` stage (and of its AR baseline, stage ``sft``).

    python synthetic.py --out output/tiny/data --seed 0
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CAPITALS = {
    "france": "paris", "spain": "madrid", "italy": "rome", "japan": "tokyo", "egypt": "cairo", "peru": "lima",
    "kenya": "nairobi", "chile": "santiago", "cuba": "havana", "norway": "oslo", "greece": "athens",
    "india": "delhi",
}
NAMES = "tom ann bob eve sam kim leo mia ray zoe max ivy".split()
COLORS = "red blue green yellow black white pink brown".split()
THINGS = "apples boxes hats cars kites shoes cups books".split()
LETTERS = "a b c d e f g h i j k l m n o p".split()
ANIMALS = "cat dog bird fish horse mouse frog duck".split()
ADJECTIVES = "small big quick slow happy old young quiet".split()
VERBS = "sees finds chases follows watches likes".split()
PLACES = "park river market school garden station".split()
TIMES = "morning evening night afternoon".split()
NOUNS = "tree house bridge table hill fence".split()

REVERSE_LENGTHS = (3, 6)  # inclusive range of the reversed sequence's length


@dataclass(frozen=True)
class Record:
    """One line of the corpus as three consecutive pieces: ``prefix middle suffix``."""

    kind: str
    prefix: str
    middle: str
    suffix: str

    @property
    def text(self) -> str:
        return " ".join(piece for piece in (self.prefix, self.middle, self.suffix) if piece)


@dataclass(frozen=True)
class Completion:
    """A prefix and the continuation it determines."""

    kind: str
    prefix: str
    target: str


def fact(rng: random.Random) -> Record:
    country = rng.choice(sorted(CAPITALS))
    return Record("fact", "the capital of", country, f"is {CAPITALS[country]} .")


def echo(rng: random.Random) -> Record:
    name, color, thing = rng.choice(NAMES), rng.choice(COLORS), rng.choice(THINGS)
    return Record("echo", f"{name} keeps", f"{color} {thing}", f"and the {thing} are {color} .")


def addition(rng: random.Random) -> Record:
    """One-digit sums: ``a + b <= 9``, so every number is one token (``a < 9`` leaves ``b`` open)."""
    a = rng.randrange(9)
    b = rng.randrange(10 - a)
    return Record("sum", f"{a} plus", str(b), f"is {a + b} .")


def reverse_pair(rng: random.Random) -> tuple[str, str]:
    """A random letter sequence and its reversal, as space-separated strings."""
    letters = [rng.choice(LETTERS) for _ in range(rng.randint(*REVERSE_LENGTHS))]
    return " ".join(letters), " ".join(reversed(letters))


def reversal(rng: random.Random) -> Record:
    sequence, reversed_sequence = reverse_pair(rng)
    return Record("reverse", f"reverse {sequence} gives", reversed_sequence, ".")


def plain(rng: random.Random) -> Record:
    templates = (
        lambda: f"the {rng.choice(ADJECTIVES)} {rng.choice(ANIMALS)} {rng.choice(VERBS)} the "
                f"{rng.choice(ADJECTIVES)} {rng.choice(ANIMALS)} near the {rng.choice(NOUNS)} .",
        lambda: f"{rng.choice(NAMES)} walks to the {rng.choice(PLACES)} in the {rng.choice(TIMES)} .",
        lambda: f"a {rng.choice(ADJECTIVES)} {rng.choice(ANIMALS)} sleeps under the {rng.choice(NOUNS)} .",
        lambda: f"in the {rng.choice(TIMES)} {rng.choice(NAMES)} and {rng.choice(NAMES)} meet at the "
                f"{rng.choice(PLACES)} .",
    )
    return Record("plain", rng.choice(templates)(), "", "")


# Share of each kind in the pre-training corpus.
CORPUS_MIX: dict[Callable[[random.Random], Record], float] = {
    plain: 0.25, fact: 0.2, echo: 0.2, addition: 0.15, reversal: 0.2,
}
INFILL_KINDS = (fact, echo, addition)


def corpus_records(count: int, seed: int) -> list[Record]:
    """``count`` records drawn from ``CORPUS_MIX``, the same for the same seed."""
    rng = random.Random(seed)
    makers, weights = list(CORPUS_MIX), list(CORPUS_MIX.values())
    return [rng.choices(makers, weights)[0](rng) for _ in range(count)]


def infill_records(count: int, seed: int) -> list[Record]:
    """Records whose middle field is determined only by their suffix, kinds in equal shares."""
    rng = random.Random(seed)
    return [INFILL_KINDS[i % len(INFILL_KINDS)](rng) for i in range(count)]


def completions(records: Iterable[Record]) -> list[Completion]:
    """The same records cut before the field their prefix determines (capital, repeated colour, sum)."""
    cut = []
    for record in records:
        words = record.text.split()
        cut.append(Completion(record.kind, " ".join(words[:-2]), words[-2]))
    return cut


def reverse_examples(count: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[dict[str, str]]:
    """``{"prompt": "reverse k q z gives", "response": "z q k"}`` pairs whose sequence is not in ``exclude``.

    The prompt keeps the corpus's wording, so that an AR model fine-tuned on it knows where it ends.
    """
    rng = random.Random(seed)
    examples: list[dict[str, str]] = []
    while len(examples) < count:
        sequence, reversed_sequence = reverse_pair(rng)
        if sequence not in exclude:
            examples.append({"prompt": f"reverse {sequence} gives", "response": reversed_sequence})
    return examples


def reversed_sequence_of(prompt: str) -> str:
    """The letters of a reversal prompt: ``"reverse k q z gives"`` -> ``"k q z"``."""
    return prompt.removeprefix("reverse ").removesuffix(" gives")


def _write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


DATASET_INFO = {
    "tiny_corpus": {"file_name": "tiny_corpus.jsonl", "columns": {"prompt": "text"}},
    "tiny_reverse": {"file_name": "tiny_reverse.jsonl", "columns": {"prompt": "prompt", "response": "response"}},
}


def write_dataset(out: Path, seed: int, corpus_size: int, sft_size: int, test_size: int) -> dict[str, int]:
    """Write the training sets (registered in ``dataset_info.json``) and the held-out test sets."""
    corpus = corpus_records(corpus_size, seed)
    sft = reverse_examples(sft_size, seed + 1)
    seen = frozenset(" ".join(reversed(r.middle.split())) for r in corpus if r.kind == "reverse")
    seen |= frozenset(reversed_sequence_of(example["prompt"]) for example in sft)
    tests = infill_records(test_size, seed + 2)
    counts = {
        "tiny_corpus": _write_jsonl(out / "tiny_corpus.jsonl", ({"text": r.text} for r in corpus)),
        "tiny_reverse": _write_jsonl(out / "tiny_reverse.jsonl", sft),
        "test_infill": _write_jsonl(out / "test_infill.jsonl", (asdict(r) for r in tests)),
        "test_complete": _write_jsonl(out / "test_complete.jsonl", (asdict(c) for c in completions(tests))),
        "test_reverse": _write_jsonl(out / "test_reverse.jsonl", reverse_examples(test_size, seed + 3, seen)),
    }
    (out / "dataset_info.json").write_text(json.dumps(DATASET_INFO, indent=2) + "\n")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the jsonl files and dataset_info.json")
    parser.add_argument("--seed", type=int, default=0, help="seed of every draw (default 0)")
    parser.add_argument("--corpus-size", type=int, default=20000, help="pre-training records (default 20000)")
    parser.add_argument("--sft-size", type=int, default=4000, help="reversal examples for ddm-sft (default 4000)")
    parser.add_argument("--test-size", type=int, default=300, help="held-out examples per test set (default 300)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    counts = write_dataset(args.out, args.seed, args.corpus_size, args.sft_size, args.test_size)
    logger.info("wrote %s to %s", ", ".join(f"{n} {name}" for name, n in counts.items()), args.out)


if __name__ == "__main__":
    main()
