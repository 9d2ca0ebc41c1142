"""Training-step time of the diffusion stage relative to AR pre-training, on the same model and batch.

One step = loss + backward + optimiser step of a GPT-2-shaped model (random weights) on CPU:
* pt: the model's own next-token loss (what stage pt runs);
* ddm during annealing: ``DiffusionTrainer.compute_loss`` at an optimiser step with ratio < 1 (a 4D
  attention mask is drawn and passed);
* ddm after annealing: the same at ratio 1 (no mask tensor is built at all).
Steps of the three kinds are interleaved and the median of each is compared, so machine load affects them
alike. Prints the ratios ddm / pt; the target after annealing is <= 1.05.

    python -m benchmarks.bench_train_step                     # GPT-2 small shape, batch 4 x 256
    python -m benchmarks.bench_train_step --layers 2 --repeats 3   # quick check
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from llamafactory.ddm import SpecialTokens, make_bidirectional
from llamafactory.hparams import FinetuningArguments, TrainingArguments
from llamafactory.train.ddm import DiffusionTrainer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12, help="transformer blocks (GPT-2 small: 12)")
    parser.add_argument("--hidden", type=int, default=768, help="hidden size (GPT-2 small: 768)")
    parser.add_argument("--heads", type=int, default=12, help="attention heads")
    parser.add_argument("--vocab", type=int, default=50257, help="vocabulary size")
    parser.add_argument("--batch", type=int, default=4, help="sequences per step")
    parser.add_argument("--length", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps of each kind")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser.parse_args()


def timed(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=args.vocab, n_positions=max(1024, args.length), n_embd=args.hidden,
                        n_layer=args.layers, n_head=args.heads)
    ar_model = GPT2LMHeadModel(config).train()
    ddm_model = make_bidirectional(GPT2LMHeadModel(config)).train()
    ddm_model.load_state_dict(ar_model.state_dict())
    ids = torch.randint(0, args.vocab - 1, (args.batch, args.length))
    anneal_steps = 1000

    with tempfile.TemporaryDirectory() as output:
        trainer = DiffusionTrainer(
            model=ddm_model, args=TrainingArguments(output_dir=output, use_cpu=True, report_to="none"),
            special_tokens=SpecialTokens(mask_id=args.vocab - 1),
            finetuning_args=FinetuningArguments(stage="ddm", anneal_steps=anneal_steps),
        )
    ar_optimizer = torch.optim.AdamW(ar_model.parameters(), lr=1e-5)
    ddm_optimizer = torch.optim.AdamW(ddm_model.parameters(), lr=1e-5)

    def pt_step() -> None:
        ar_model(input_ids=ids, labels=ids).loss.backward()
        ar_optimizer.step()
        ar_optimizer.zero_grad(set_to_none=True)

    def ddm_step(global_step: int) -> Callable[[], None]:
        def step() -> None:
            trainer.state.global_step = global_step
            trainer.compute_loss(ddm_model, {"input_ids": ids}).backward()
            ddm_optimizer.step()
            ddm_optimizer.zero_grad(set_to_none=True)
        return step

    kinds = {"pt": pt_step, "ddm_annealing": ddm_step(anneal_steps // 2), "ddm_annealed": ddm_step(anneal_steps)}
    for step in kinds.values():  # warm-up: allocator, optimiser state
        step()
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(args.repeats):
        for name, step in kinds.items():
            times[name].append(timed(step))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"model: GPT-2 shape, {args.layers} layers x {args.hidden}, vocab {args.vocab}; "
          f"batch {args.batch} x {args.length}; {torch.get_num_threads()} threads; {args.repeats} steps each")
    for name, seconds in median.items():
        print(f"  {name:<14} median step {seconds:.3f} s")
    print(f"ratio ddm/pt during annealing (ratio 0.5): {median['ddm_annealing'] / median['pt']:.3f}")
    print(f"ratio ddm/pt after annealing (no mask):    {median['ddm_annealed'] / median['pt']:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
