"""Block diffusion's speed: one cached reverse step against a full forward, and whole generations against
the AR base's cached ``generate`` on the mini-paper models.

(a) A GPT-2-small-shaped random model (12 layers, 768 wide, 12 heads, GPT-2's vocabulary) with
``block_size = B`` and a context of ``--context`` tokens whose last block is the current one. Per ``B``, side
by side on the same tokens: ``full`` is what ``cache="none"`` runs each step (the whole context under the
block-causal mask), ``cached`` what ``cache="block"`` runs (the block's ``B`` columns against the cached
columns before it, which were written once). Both include the mask and the block's logits; the median of
``--repeats`` runs.

(b) With ``--mini-paper WORK`` (the work folder of ``examples/mini_paper/run.sh``): the same held-out
prefixes continued by the AR base (``pt``, transformers' cached ``generate``), the full-sequence adapted model
(``ddm-adapted``: the original recipe, one step per token without a cache, and the fast path, threshold 0.9
with a dual cache over blocks of 16) and the block models (``ddm-block*``: exact cache, threshold 0.9 and
factor 1), all sampling at temperature 1 with the same per-row seeds, one after another in this process.
Printed: tokens per second and its ratio to the AR base, NFE per generated token, and the generative
perplexity of the samples under the AR base beside the AR base's own samples'.

    python -m benchmarks.bench_block                          # (a): B = 4, 16, 32 at context 512
    python -m benchmarks.bench_block --blocks 8 --context 1024 --device cuda
    python -m benchmarks.bench_block --skip-steps --mini-paper LLaMA-Factory/output/mini-paper   # (b)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from dlm_eval import AutoregressiveEngine, Decoding, DiffusionEngine, FillRequest
from dlm_eval.engine import Engine, GenerationMeter
from llamafactory.data.processors import pretrain_batch
from llamafactory.ddm import DiffusionLM, SpecialTokens, framing_tokens, load_diffusion_lm, nll_totals
from llamafactory.ddm.cache import DenoiserCalls


def gpt2_small(block_size: int, context: int, device: str) -> DiffusionLM:
    config = GPT2Config(n_positions=max(1024, context), attn_implementation="sdpa")
    model = GPT2LMHeadModel(config).eval().to(device)
    return DiffusionLM(model, SpecialTokens(mask_id=config.vocab_size - 1), block_size=block_size)


def median_seconds(run: Callable[[], torch.Tensor], repeats: int, device: str) -> float:
    """Median wall time of ``run`` after one warm-up call."""
    times = []
    for index in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if index:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def step_times(block_size: int, context: int, batch: int, repeats: int, device: str) -> tuple[float, float]:
    """``(full, cached)`` seconds of one reverse step on the last block of a ``context``-token row."""
    model = gpt2_small(block_size, context, device)
    tokens = torch.randint(0, model.config.vocab_size - 1, (batch, context), device=device)
    start = context - block_size
    rows = torch.ones(batch, dtype=torch.bool, device=device)
    times = []
    for mode in ("none", "block"):
        calls = DenoiserCalls(model, mode=mode, shift=True, attention_mask=None, refresh_every=None)
        calls.start_block(start, context, tokens)  # block mode: the columns before the block are cached here
        times.append(median_seconds(lambda calls=calls: calls(tokens, rows), repeats, device))
    return times[0], times[1]


def print_step_times(args: argparse.Namespace) -> None:
    print(f"GPT-2-small shape, random weights, context {args.context}, batch {args.batch}, {args.device}")
    print(f"{'B':>4} {'full forward (ms)':>18} {'cached block step (ms)':>23} {'cached / full':>14}")
    for block in args.blocks:
        full, cached = step_times(block, args.context, args.batch, args.repeats, args.device)
        print(f"{block:>4} {full * 1e3:>18.1f} {cached * 1e3:>23.1f} {cached / full:>14.2f}")


SAMPLED = {"temperature": 1.0, "top_p": None, "greedy": False}


@dataclass(frozen=True)
class Decoder:
    """One row of table (b): a model of the work folder and how it decodes."""

    label: str
    model: str  # folder name under the work folder
    decoding: Decoding | None  # None: the AR base's cached ``generate``
    one_step_per_token: bool = True  # T = n (an upper bound for the parallel rules)


def decoders(work: Path) -> list[Decoder]:
    rows = [Decoder("AR base, cached generate", "pt", None),
            Decoder("full sequence, original recipe (T = n, no cache)", "ddm-adapted",
                    Decoding(strategy="random", cache="none", **SAMPLED)),
            Decoder("full sequence, threshold 0.9, dual cache, blocks of 16", "ddm-adapted",
                    Decoding(strategy="threshold", threshold=0.9, cache="dual", block_length=16, **SAMPLED))]
    for folder in sorted(work.glob("ddm-block*"), key=lambda p: int(p.name.removeprefix("ddm-block") or 0)):
        block = folder.name.removeprefix("ddm-block")
        rows += [Decoder(f"block B = {block}, threshold 0.9, exact cache", folder.name,
                         Decoding(strategy="threshold", threshold=0.9, **SAMPLED)),
                 Decoder(f"block B = {block}, factor 1, exact cache", folder.name,
                         Decoding(strategy="factor", factor=1.0, **SAMPLED))]
    return rows


def heldout_prompts(tokenizer: Any, work: Path, rows: int, prompt_tokens: int, length: int) -> list[list[int]]:
    """The first ``prompt_tokens`` tokens of the first ``rows`` held-out windows, packed as in training."""
    documents = [json.loads(line)["text"] for line in (work / "data" / "test.jsonl").read_text().splitlines()
                 if line.strip()]
    packed = pretrain_batch({"text": documents}, tokenizer=tokenizer, tokens=framing_tokens(tokenizer),
                            cutoff_len=length, packing=True)["input_ids"]
    return [window[:prompt_tokens] for window in packed[:rows]]


def timed_fill(engine: Engine, requests: list[FillRequest], decoding: Decoding) -> tuple[list[list[int]], GenerationMeter]:
    """The holes of ``requests`` and what they cost (after one warm-up call on the first two requests)."""
    engine.fill(requests[:2], decoding, desc="warm-up")
    before = GenerationMeter()
    before.add(engine.meter)
    holes = engine.fill(requests, decoding, desc="timed")
    meter = engine.meter
    return holes, GenerationMeter(meter.examples - before.examples, meter.tokens - before.tokens,
                                  meter.evaluations - before.evaluations, meter.seconds - before.seconds)


def generative_perplexity(judge: Engine, prompts: list[list[int]], holes: list[list[int]]) -> float:
    nll = nll_totals(judge.sequence_nll([p + h for p, h in zip(prompts, holes)], given=len(prompts[0]), steps=1,
                                        seed=0, desc="gen ppl")).tolist()
    return math.exp(nll[0] / nll[1])


def print_mini_paper(args: argparse.Namespace) -> None:
    work = args.mini_paper
    tokenizer = AutoTokenizer.from_pretrained(work / "pt")
    judge = AutoregressiveEngine(AutoModelForCausalLM.from_pretrained(work / "pt"), tokenizer, batch_size=args.rows,
                                 sampling=True, full_length=True)
    length = judge.max_length
    prompts = heldout_prompts(tokenizer, work, args.rows, args.prompt_tokens, length)
    requests = [FillRequest(p, length - len(p), steps=length - len(p), seed=row) for row, p in enumerate(prompts)]
    print(f"mini-paper models in {work}: {len(prompts)} held-out prefixes of {args.prompt_tokens} tokens, "
          f"{length - args.prompt_tokens} new tokens each, one batch, {torch.get_num_threads()} CPU threads")
    print(f"{'decoder':<58} {'tokens/s':>9} {'vs AR':>7} {'NFE/token':>10} {'gen ppl':>9} {'vs AR':>7}")
    reference: tuple[float, float] | None = None
    for row in decoders(work):
        if row.decoding is None:
            engine: Engine = judge
            decoding = Decoding(**SAMPLED)
        else:
            model, _ = load_diffusion_lm(work / row.model, device="cpu")
            engine, decoding = DiffusionEngine(model, tokenizer, batch_size=args.rows), row.decoding
        holes, cost = timed_fill(engine, requests, decoding)
        speed, ppl = cost.tokens / cost.seconds, generative_perplexity(judge, prompts, holes)
        reference = reference or (speed, ppl)
        print(f"{row.label:<58} {speed:>9.0f} {speed / reference[0]:>6.2f}x {cost.evaluations / cost.tokens:>10.2f} "
              f"{ppl:>9.1f} {ppl / reference[1]:>6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, nargs="+", default=[4, 16, 32], help="block sizes B of (a)")
    parser.add_argument("--context", type=int, default=512, help="context of (a), in tokens")
    parser.add_argument("--batch", type=int, default=1, help="rows of (a)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of (a); the median is printed")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-steps", action="store_true", help="skip (a)")
    parser.add_argument("--mini-paper", type=Path, help="(b): the mini-paper pipeline's work folder")
    parser.add_argument("--rows", type=int, default=16, help="held-out prefixes of (b)")
    parser.add_argument("--prompt-tokens", type=int, default=32, help="prefix length of (b)")
    args = parser.parse_args()
    torch.manual_seed(0)
    if not args.skip_steps:
        print_step_times(args)
    if args.mini_paper is not None:
        print_mini_paper(args)


if __name__ == "__main__":
    main()
