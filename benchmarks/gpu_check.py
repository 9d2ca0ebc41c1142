"""One CUDA machine check of the GPU paths, printed as one table; nothing is downloaded, every model is built
from a config with random weights. About 5 minutes on one H100 / H200.

    python -m benchmarks.gpu_check                # everything
    python -m benchmarks.gpu_check --quick        # fewer timed steps and rows (about 2 minutes)

Rows:

* ``logits``: a bidirectional GPT-2 (small shape) and LLaMA (the ~1.1B shape of ``bench_trainer_mfu.py``)
  in bf16 under ``eager``, ``sdpa`` and ``flash_attention_2`` (when the flash-attn package is installed):
  logits agree with eager's (largest difference relative to the largest logit, argmax agreement), and
  changing the last token changes the first position's logits (the model really sees the future);
* ``ddm step``: one bf16 training step of the diffusion loss (``llamafactory.ddm.training_loss``) on the
  LLaMA shape, during annealing (an annealed 4D mask: sdpa) and after it (no mask: flash_attention_2 when
  installed, else sdpa): finite loss and gradients, step time;
* ``trainer MFU``: the 7B trainer's step (``bench_trainer_mfu.py``) at the ~1.1B LLaMA shape, ddm and ar;
* ``generation``: the settings of ``bench_generate.py`` run end to end on a GPT-2-small-shaped model,
  prompt 256 + 256 generated tokens: tokens/s, NFE and speed-up over the original recipe;
* ``scoring``: the batched multiple-choice scorer of the evaluation (``DiffusionEngine.score``) on the
  GPT-2 small shape: scored rows per second.

Without CUDA it says so and exits (status 0): there is nothing to check on a CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from collections.abc import Callable

import torch

GPT2_SMALL = dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024)
GPT2_VOCAB = 50257
# bf16 agreement with eager: largest |difference| relative to the largest |logit|, and argmax agreement.
RELATIVE_TOLERANCE, ARGMAX_AGREEMENT = 2e-2, 0.98


class Table:
    """Rows of (check, setting, result, ok), printed at the end."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, check: str, setting: str, result: str, ok: bool | None = None) -> None:
        self.rows.append((check, setting, result, "-" if ok is None else ("ok" if ok else "FAIL")))
        print(f"{check}: {setting}: {result}", flush=True)

    def print(self) -> bool:
        widths = [max(len(row[i]) for row in [("check", "setting", "result", "ok"), *self.rows]) for i in range(4)]
        print()
        for row in [("check", "setting", "result", "ok"), tuple("-" * w for w in widths), *self.rows]:
            print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths)))
        return all(row[3] != "FAIL" for row in self.rows)


def attention_implementations() -> list[str]:
    found = ["eager", "sdpa"]
    if importlib.util.find_spec("flash_attn") is not None:
        found.append("flash_attention_2")
    return found


def _synchronized(function: Callable[[], object]) -> tuple[object, float]:
    torch.cuda.synchronize()
    started = time.perf_counter()
    result = function()
    torch.cuda.synchronize()
    return result, time.perf_counter() - started


def build(kind: str, attention: str, device: torch.device, *, seed: int = 0) -> torch.nn.Module:
    """A bidirectional bf16 model of ``kind`` (gpt2: GPT-2 small shape; llama: the ~1.1B shape), seeded."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from llamafactory.ddm import make_bidirectional

    from .bench_trainer_mfu import ONE_B

    torch.manual_seed(seed)
    with device:
        if kind == "gpt2":
            model = GPT2LMHeadModel(GPT2Config(vocab_size=GPT2_VOCAB, **GPT2_SMALL, attn_implementation=attention))
        else:
            config = LlamaConfig(**ONE_B, max_position_embeddings=4096, tie_word_embeddings=False,
                                 attn_implementation=attention)
            model = LlamaForCausalLM(config)
    return make_bidirectional(model.to(torch.bfloat16)).eval()


@torch.no_grad()
def check_logits(table: Table, device: torch.device, length: int) -> None:
    for kind in ("gpt2", "llama"):
        vocab = GPT2_VOCAB if kind == "gpt2" else 32000
        ids = torch.randint(0, vocab, (2, length), device=device, generator=torch.Generator(device).manual_seed(0))
        changed = ids.clone()
        changed[:, -1] = (changed[:, -1] + 1) % vocab
        reference = None
        for attention in attention_implementations():
            model = build(kind, attention, device)
            logits = model(input_ids=ids).logits.float()
            sees_future = not torch.equal(logits[:, 0], model(input_ids=changed).logits.float()[:, 0])
            if reference is None:
                reference = logits
            relative = float((logits - reference).abs().max() / reference.abs().max())
            agreement = float((logits.argmax(-1) == reference.argmax(-1)).float().mean())
            ok = sees_future and relative <= RELATIVE_TOLERANCE and agreement >= ARGMAX_AGREEMENT
            table.add("logits", f"{kind} {attention} vs eager, 2 x {length}",
                      f"max rel diff {relative:.1e}, argmax agree {agreement:.4f}, sees future {sees_future}", ok)


def _training_step(device: torch.device, attention: str, anneal: float, length: int, batch: int) -> tuple[float, float, bool]:
    """(loss, seconds, all parameters finite) of one timed bf16 diffusion step on the LLaMA shape, after a warm-up."""
    from llamafactory.ddm import training_loss

    model = build("llama", attention, device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    generator = torch.Generator(device).manual_seed(0)
    ids = torch.randint(0, 31999, (batch, length), device=device, generator=generator)

    def step() -> float:
        loss = training_loss(model, ids, 31999, anneal=anneal, generator=generator).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    step()
    loss, seconds = _synchronized(step)
    return loss, seconds, all(bool(torch.isfinite(p).all()) for p in model.parameters())


def check_training_steps(table: Table, device: torch.device, length: int, batch: int) -> None:
    after = "flash_attention_2" if "flash_attention_2" in attention_implementations() else "sdpa"
    for phase, anneal, attention in (("during annealing", 0.5, "sdpa"), ("after annealing", 1.0, after)):
        loss, seconds, finite = _training_step(device, attention, anneal, length, batch)
        table.add("ddm step", f"llama 1.1B bf16, {phase} ({attention}), {batch} x {length}",
                  f"loss {loss:.3f}, {seconds:.3f} s/step", finite and math.isfinite(loss))
        torch.cuda.empty_cache()


def check_trainer_mfu(table: Table, steps: int) -> None:
    from . import bench_trainer_mfu

    results = bench_trainer_mfu.main(["--steps", str(steps), "--warmup", "3"])
    for variant, row in results.items():
        mfu = f"MFU {100 * row['mfu']:.1f}%" if "mfu" in row else "MFU n/a (unknown peak)"
        table.add("trainer MFU", f"{variant}, llama {row['params_b']:.2f}B, seq 2048, batch 8, sdpa",
                  f"{row['tokens_per_s']:.0f} tok/s, {mfu}, {row.get('peak_mem_gb', 0):.1f} GiB")


@torch.no_grad()
def check_generation(table: Table, device: torch.device, rows: int) -> None:
    from llamafactory.ddm import DiffusionLM, SpecialTokens, sample

    from .bench_generate import settings

    prompt, new_tokens, block = 256, 256, 32
    model = DiffusionLM(build("gpt2", "sdpa", device), SpecialTokens(mask_id=10541, eos_id=50256))
    ids = torch.randint(0, 50000, (rows, prompt + new_tokens), device=device,
                        generator=torch.Generator(device).manual_seed(0))
    ids[ids == model.mask_id] += 1  # the mask id is an ordinary GPT-2 token; keep it out of the prompt
    ids[:, prompt:] = model.mask_id
    given = torch.zeros_like(ids, dtype=torch.bool)
    given[:, :prompt] = True
    sample(model, ids, model.mask_id, settings(block, 0.9, 1.0, [1.0])[0].config(steps=8), src_mask=given)
    original = None
    for setting in settings(block, 0.9, 1.0, [1.0]):
        output, seconds = _synchronized(lambda setting=setting: sample(
            model, ids, model.mask_id, setting.config(steps=new_tokens), src_mask=given))
        original = original or seconds
        table.add("generation", f"gpt2-small {rows} x ({prompt} + {new_tokens}), {setting.name}",
                  f"{rows * new_tokens / seconds:.0f} tok/s, NFE {float(output.nfe.float().mean()):.0f}, "
                  f"{original / seconds:.1f}x")


def check_scoring(table: Table, device: torch.device, examples: int) -> None:
    from dlm_eval import DiffusionEngine
    from llamafactory.ddm import DiffusionLM, SpecialTokens

    from .bench_scoring import build_examples

    model = DiffusionLM(build("gpt2", "sdpa", device), SpecialTokens(mask_id=GPT2_VOCAB - 1, pad_id=GPT2_VOCAB - 2))
    pairs = [pair for choices in build_examples(examples, 4, GPT2_VOCAB, seed=0) for pair in choices]
    engine = DiffusionEngine(model, tokenizer=None, batch_size=256)
    engine.score(pairs[:4], steps=2, seed=0, desc="warm-up")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        _, seconds = _synchronized(lambda: engine.score(pairs, steps=32, seed=0, desc="scoring"))
    table.add("scoring", f"gpt2-small bf16, {examples} x 4 choices x T=32, batch 256",
              f"{len(pairs) * 32 / seconds:.0f} rows/s, {examples / seconds:.1f} examples/s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer timed steps, rows and examples")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: this script checks the GPU paths and has nothing to do on a CPU")
        return 0
    device = torch.device("cuda")
    print(f"device {torch.cuda.get_device_name(device)}; torch {torch.__version__}; "
          f"attention: {', '.join(attention_implementations())}", flush=True)
    table = Table()
    check_logits(table, device, length=512)
    check_training_steps(table, device, length=2048, batch=2)
    check_trainer_mfu(table, steps=5 if args.quick else 15)
    check_generation(table, device, rows=4 if args.quick else 8)
    torch.cuda.empty_cache()
    check_scoring(table, device, examples=64 if args.quick else 256)
    return 0 if table.print() else 1


if __name__ == "__main__":
    sys.exit(main())
