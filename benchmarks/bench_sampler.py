"""Sampler overhead: time of T-step sampling vs T forward passes, GPT-2-small shape, CPU.

Prints ``ratio = sampling time / (forward calls x one forward)``, measured side by side in one run,
with and without nucleus (top-p) filtering. Target: <= 1.10 without top-p.

    python -m benchmarks.bench_sampler [--length 256] [--steps 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from llamafactory.ddm import DiffusionLM, SamplingConfig, SpecialTokens, sample


def _timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = DiffusionLM(GPT2LMHeadModel(GPT2Config()), SpecialTokens(mask_id=10541, eos_id=50256)).eval()
    ids = torch.full((1, args.length), 10541)
    ids[0, 0] = 50256
    calls = []

    def denoiser(tokens: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return model(tokens)

    with torch.no_grad():
        model(ids)  # warm-up
        rows = []
        for label, top_p in (("no top-p", None), ("top-p 0.9", 0.9)):
            config = SamplingConfig(steps=args.steps, temperature=0.95, top_p=top_p)
            ratios = []
            for repeat in range(args.repeats):
                forward = statistics.median(_timed(model, ids) for _ in range(3))
                calls.clear()
                total = _timed(sample, denoiser, ids, 10541, config, generator=torch.Generator().manual_seed(repeat))
                ratios.append(total / (len(calls) * forward))
            rows.append((label, forward, statistics.median(ratios)))
    print(f"GPT-2 small (124M), length {args.length}, T={args.steps}, {args.threads} threads, CPU")
    print(f"{'sampler':<12} {'forward (s)':>12} {'ratio':>8}")
    for label, forward, ratio in rows:
        print(f"{label:<12} {forward:>12.3f} {ratio:>8.3f}")


if __name__ == "__main__":
    main()
