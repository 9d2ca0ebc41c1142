"""One reverse step of a block-diffusion model: the exact key/value cache against one full forward.

A GPT-2-small-shaped random model (12 layers, 768 wide, 12 heads, GPT-2's vocabulary) with ``block_size = B``
and a context of ``--context`` tokens whose last block is the current one. Per ``B``, side by side on the same
tokens: ``full`` is what ``cache="none"`` runs each step (the whole context under the block-causal mask),
``cached`` what ``cache="block"`` runs (the block's ``B`` columns against the cached columns before it, which
were written once). Both include the mask and the block's logits; the median of ``--repeats`` runs.

    python benchmarks/bench_block.py                          # B = 4, 16, 32 at context 512
    python benchmarks/bench_block.py --blocks 8 --context 1024 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from llamafactory.ddm import DiffusionLM, SpecialTokens
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[4, 16, 32], help="block sizes B")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"GPT-2-small shape, random weights, context {args.context}, batch {args.batch}, {args.device}")
    print(f"{'B':>4} {'full forward (ms)':>18} {'cached block step (ms)':>23} {'full / cached':>14}")
    for block in args.blocks:
        full, cached = step_times(block, args.context, args.batch, args.repeats, args.device)
        print(f"{block:>4} {full * 1e3:>18.1f} {cached * 1e3:>23.1f} {full / cached:>14.1f}")


if __name__ == "__main__":
    main()
