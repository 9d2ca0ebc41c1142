"""Multiple-choice scoring speed: the batched likelihood scorer vs a one-example-one-level loop, side by side.

    python -m benchmarks.bench_scoring                       # CPU, a small random GPT-2, 32 HellaSwag-like examples
    python -m benchmarks.bench_scoring --device cuda --examples 256 --batch_size 256

Both paths score the same (context, choice) pairs at the same ``T`` noise levels with the same masks
(``--scorer``'s estimator);
the loop runs one forward pass per (example, choice, level), as the original evaluation scripts did.
The script checks that both give the same scores and prints examples per second and the speed-up.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from dlm_eval import DiffusionEngine
from llamafactory.ddm import ESTIMATORS, DiffusionLM, SpecialTokens, level_masks


def build_model(args: argparse.Namespace) -> DiffusionLM:
    torch.manual_seed(args.seed)
    config = GPT2Config(vocab_size=args.vocab, n_positions=256, n_embd=args.width, n_layer=args.layers,
                        n_head=max(1, args.width // 64))
    model = GPT2LMHeadModel(config).eval().to(args.device)
    return DiffusionLM(model, SpecialTokens(mask_id=args.vocab - 1, pad_id=args.vocab - 2, eos_id=args.vocab - 2))


def build_examples(count: int, choices: int, vocab: int, seed: int) -> list[list[tuple[list[int], list[int]]]]:
    """HellaSwag-like shapes: a 30-60 token context and ``choices`` endings of 8-24 tokens (ids below
    ``vocab - 2``, clear of the mask and padding ids)."""
    generator = torch.Generator().manual_seed(seed)

    def tokens(low: int, high: int) -> list[int]:
        length = int(torch.randint(low, high + 1, (1,), generator=generator))
        return torch.randint(0, vocab - 2, (length,), generator=generator).tolist()

    examples = []
    for _ in range(count):
        context = tokens(30, 60)
        examples.append([(context, tokens(8, 24)) for _ in range(choices)])
    return examples


@torch.no_grad()
def loop_scores(model: DiffusionLM, pairs, steps: int, seed: int, estimator: str) -> list[float]:
    """One forward pass per (pair, non-empty level): the unbatched baseline."""
    scores = []
    for context, continuation in pairs:
        total = 0.0
        target = torch.tensor(continuation, device=model.device)
        for positions in level_masks(len(continuation), steps, seed, estimator):
            if not positions:
                continue
            ids = torch.tensor([context + continuation], device=model.device)
            masked = [len(context) + p for p in positions]
            ids[0, masked] = model.mask_id
            logits = model.token_logits(ids)[0, masked].float()
            total += F.cross_entropy(logits, target[positions]).item() / steps
        scores.append(total)
    return scores


def timed(function):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--choices", type=int, default=4)
    parser.add_argument("--steps", type=int, default=32, help="noise levels T")
    parser.add_argument("--scorer", choices=ESTIMATORS, default="original", help="likelihood estimator")
    parser.add_argument("--batch_size", type=int, default=64, help="rows per forward pass of the batched scorer")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two methods")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args)
    examples = build_examples(args.examples, args.choices, args.vocab, args.seed)
    pairs = [pair for example in examples for pair in example]
    engine = DiffusionEngine(model, tokenizer=None, batch_size=args.batch_size)
    engine.score(pairs[: args.choices], steps=2, seed=args.seed, desc="warm-up")
    # Alternate the two methods over slices of the data, so that load changes on a shared machine hit both.
    batched, looped, batched_seconds, loop_seconds = [], [], 0.0, 0.0
    per_round = -(-len(examples) // args.rounds) * args.choices
    for start in range(0, len(pairs), per_round):
        part = pairs[start : start + per_round]
        scores, seconds = timed(lambda part=part: engine.score(part, steps=args.steps, seed=args.seed,
                                                               estimator=args.scorer, desc="batched"))
        batched, batched_seconds = batched + scores, batched_seconds + seconds
        scores, seconds = timed(lambda part=part: loop_scores(model, part, args.steps, args.seed, args.scorer))
        looped, loop_seconds = looped + scores, loop_seconds + seconds
    difference = max(abs(a - b) for a, b in zip(batched, looped))

    def picks(scores: list[float]) -> list[int]:
        rows = [scores[i : i + args.choices] for i in range(0, len(scores), args.choices)]
        return [min(range(len(row)), key=row.__getitem__) for row in rows]

    device = torch.cuda.get_device_name() if model.device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device}; model: GPT-2 {args.layers} layers x {args.width}, vocab {args.vocab}; "
          f"{args.examples} examples x {args.choices} choices x T={args.steps} levels "
          f"= {len(pairs) * args.steps} scored rows")
    print(f"one-example-one-level loop: {loop_seconds:8.2f} s  {args.examples / loop_seconds:8.2f} examples/s")
    print(f"batched (batch {args.batch_size:>4}):      {batched_seconds:8.2f} s  "
          f"{args.examples / batched_seconds:8.2f} examples/s")
    print(f"speed-up: {loop_seconds / batched_seconds:.1f}x; max |score difference| {difference:.2e}; "
          f"same choices: {picks(batched) == picks(looped)}")


if __name__ == "__main__":
    main()
