"""Throughput and MFU of the DiffuLLaMA trainer's step (the 7B recipe at a ~1.1B LLaMA shape that fits one GPU),
with an autoregressive step side by side.

    python -m benchmarks.bench_trainer_mfu                 # one GPU: ~1.1B LLaMA shape, seq 2048, bf16, sdpa
    python -m benchmarks.bench_trainer_mfu --tiny          # CPU smoke run of the same code path

Both variants train the same randomly initialised LLaMA-shaped model with AdamW (0.9, 0.95) under bf16
autocast over fp32 master weights (accelerate's single-device ``mixed_precision="bf16"``):

* ``ddm``: the trainer's own step (``parallel.DataParallel.step``: noise, bidirectional forward, chunked
  ELBO cross-entropy on masked rows, backward) on blocks of ``--seq-length + 1`` tokens;
* ``ar``: a plain causal-LM step (transformers' own loss) on the same blocks.

Prints tokens/s, step time and MFU (model FLOPs from ``throughput.flops_per_token`` over the device's
bf16 peak or ``--peak-tflops``) for each, and the ddm/ar throughput ratio. Target: ddm MFU >= 40% on one
H100.
"""

from __future__ import annotations

import argparse
import gc
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from diffullama_training.parallel import DataParallel
from diffullama_training.throughput import ThroughputMeter, detect_peak_tflops, flops_per_token
from llamafactory.ddm import make_bidirectional

ONE_B = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5504, num_hidden_layers=20,
             num_attention_heads=16, num_key_value_heads=16)
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny model and sequence, runs anywhere in seconds")
    parser.add_argument("--seq-length", type=int, default=None, help="default 2048 (tiny: 63)")
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per step (default 8; tiny: 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 25; tiny: 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5; tiny: 1)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations (7B recipe)")
    parser.add_argument("--attn-implementation", default="sdpa", choices=("sdpa", "eager", "flash_attention_2"))
    parser.add_argument("--peak-tflops", type=float, default=None, help="device bf16 peak (default: known GPUs)")
    args = parser.parse_args(argv)
    small = args.tiny
    args.seq_length = args.seq_length or (63 if small else 2048)
    args.batch_size = args.batch_size or (2 if small else 8)
    args.steps = args.steps or (2 if small else 25)
    args.warmup = args.warmup if args.warmup is not None else (1 if small else 5)
    return args


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(variant: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Train ``warmup + steps`` steps of one variant; tokens/s and MFU over the timed steps."""
    torch.manual_seed(0)
    config = LlamaConfig(**(TINY if args.tiny else ONE_B), max_position_embeddings=args.seq_length + 1,
                         tie_word_embeddings=False)
    with device:  # initialise on the device: a 1B model's CPU init alone takes longer than the benchmark
        model = AutoModelForCausalLM.from_config(config, attn_implementation=args.attn_implementation)
    if variant == "ddm":
        make_bidirectional(model)
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    block = args.seq_length + 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    step_fn = DataParallel()
    generator = torch.Generator(device).manual_seed(0)
    data = torch.randint(0, config.vocab_size - 1, (args.batch_size, block), device=device, generator=generator)
    mask_id = config.vocab_size - 1
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def train_step() -> None:
        with autocast:
            if variant == "ddm":
                step_fn.step(model, data, mask_id, generator, 1.0, lambda loss: loss.backward())
            else:
                model(input_ids=data, labels=data, use_cache=False).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        train_step()
    peak = args.peak_tflops or detect_peak_tflops(device)
    meter = ThroughputMeter(flops_per_token(model, block), peak, num_devices=1)
    _synchronize(device)
    meter.report()  # restart the interval after warm-up
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step()
        meter.add(args.batch_size * block)
    _synchronize(device)
    result = {"step_s": (time.perf_counter() - start) / args.steps, "flops_per_token": meter.flops_per_token,
              **meter.report()}
    result["params_b"] = sum(p.numel() for p in model.parameters()) / 1e9
    if device.type == "cuda":
        result["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def release_memory(device: torch.device) -> None:
    """Free the previous variant's model and optimizer state before the next one starts."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or detect_peak_tflops(device)
    print(f"device {name}; bf16 peak {peak or 'unknown'} TFLOP/s; seq {args.seq_length}+1, batch {args.batch_size}, "
          f"{args.warmup} warm-up + {args.steps} timed steps, {args.attn_implementation}, "
          f"gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}", flush=True)
    results = {}
    for variant in ("ddm", "ar"):
        results[variant] = measure(variant, args, device)
        release_memory(device)
    shape = TINY if args.tiny else ONE_B
    print(f"model: LLaMA shape {shape['num_hidden_layers']} layers x {shape['hidden_size']} hidden, "
          f"{shape['num_attention_heads']} heads, vocab {shape['vocab_size']}: {results['ddm']['params_b']:.2f}B parameters "
          "(the trainer's step for 7B, measured at this size)")
    print(f"{'variant':8} {'tokens/s':>12} {'step s':>8} {'MFU':>7} {'peak GiB':>8}")
    for variant, row in results.items():
        mfu = f"{100 * row['mfu']:.1f}%" if "mfu" in row else "n/a"
        memory = f"{row['peak_mem_gb']:.1f}" if "peak_mem_gb" in row else "n/a"
        print(f"{variant:8} {row['tokens_per_s']:12.1f} {row['step_s']:8.3f} {mfu:>7} {memory:>8}")
    ratio = results["ddm"]["tokens_per_s"] / results["ar"]["tokens_per_s"]
    print(f"ddm / ar throughput ratio: {ratio:.3f}")
    return results


if __name__ == "__main__":
    main()
