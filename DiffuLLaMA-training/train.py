"""Adapt an autoregressive LLaMA into a diffusion LM (DiffuLLaMA) on TinyLlama packed data.

    accelerate launch --config_file accelerate_configs/single_node.yaml train.py \\
        --batch-size 60 --gradient-accumulate-every 4 --output-dir output/7B_diffusion --seed 2829 \\
        --max-train-steps 20000 --learning-rate 1.5e-5 --dataset data/slim_star_combined \\
        --model meta-llama/Llama-2-7b-hf --seq-length 2048 --parallel_mode data_parallel

Every step draws a noise level per sequence, masks tokens and minimises the ELBO-weighted masked
cross-entropy of ``llamafactory.ddm`` (SPEC 3) with AdamW (0.9, 0.95), weight decay 0.1 and a constant
learning rate after an optional linear warm-up. The loss only upcasts the masked rows, in chunks.
Training state is saved atomically every ``--save-every`` steps and at the end; ``--resume`` continues
a run with the same global batch and the same data order. The final weights go to
``<output-dir>/final`` in the released DiffuLLaMA layout (loadable by ``inf_diffullama.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, InitProcessGroupKwargs, set_seed
from tqdm import tqdm
from transformers import AutoConfig, PretrainedConfig
from transformers.utils import is_flash_attn_2_available

from checkpointing import check_resumable, find_resume_checkpoint, read_state, save_checkpoint
from llamafactory.ddm import (
    DiffusionInputError,
    DiffusionLM,
    SpecialTokens,
    anneal_ratio,
    load_causal_lm,
    load_tokenizer,
    resolve_checkpoint_dir,
    resolve_special_tokens,
    save_diffusion_checkpoint,
    sequence_nll,
)
from packed_dataset import PackedDataError, PackedSource, mixed_stream, packed_files, parse_data_config
from parallel import Layout, accelerator_kwargs, canonical_mode, check_mode, make_strategy
from throughput import ThroughputMeter, detect_peak_tflops, flops_per_token

logger = logging.getLogger("train")

DEFAULT_DATA_CONFIG = "train_slim:0.693584,train_star:0.306416"
LOG_FILE = "train_log.jsonl"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", required=True, help="checkpoints, logs and the final model (final/)")
    run.add_argument("--model", default="meta-llama/Llama-2-7b-hf", help="base causal LM (directory or Hub id)")
    run.add_argument("--seed", type=int, default=42, help="seed of data order and noise (default 42)")
    run.add_argument("--max-train-steps", type=int, default=400, help="optimizer steps in total (default 400)")
    run.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                     help="continue from CHECKPOINT, or with no value from the latest one in --output-dir (if any)")
    run.add_argument("--save-every", type=int, default=1000, help="save the training state every N steps (default 1000)")
    run.add_argument("--keep-checkpoints", type=int, default=2, help="training states kept on disk (default 2)")
    run.add_argument("--log-every", type=int, default=10, help="log loss, lr, tokens/s and MFU every N steps (default 10)")
    run.add_argument("--wandb", metavar="PROJECT", default=None, help="also log to this Weights & Biases project")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True, help="directory of TinyLlama packed files (prepare_data.py)")
    data.add_argument("--data-config", default=DEFAULT_DATA_CONFIG,
                      help=f"file prefixes and mixing weights, PREFIX:WEIGHT,... (default {DEFAULT_DATA_CONFIG})")
    data.add_argument("--seq-length", type=int, default=2048, help="tokens per sample; blocks hold seq_length + 1 (default 2048)")
    data.add_argument("--buffer-files", type=int, default=8, help="files shuffled together per rank (default 8)")
    data.add_argument("--val-dataset", default=None, help="directory of packed validation files (*.bin)")
    data.add_argument("--eval-every", type=int, default=1000, help="validate every N steps when --val-dataset is set")
    data.add_argument("--val-blocks", type=int, default=64, help="validation samples, split over ranks (default 64)")
    data.add_argument("--eval-diffusion-steps", type=int, default=32, help="noise levels of the ELBO estimate (default 32)")
    data.add_argument("--eval-batch-size", type=int, default=8, help="rows per validation forward (default 8)")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--batch-size", type=int, default=1, help="sequences per device per micro-step (default 1)")
    optim.add_argument("--gradient-accumulate-every", type=int, default=8, help="micro-steps per optimizer step (default 8)")
    optim.add_argument("--learning-rate", type=float, default=2e-5, help="constant learning rate (default 2e-5)")
    optim.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up steps (default 0)")
    optim.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default 0.1)")
    optim.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm (default 1.0)")
    optim.add_argument("--mixed-precision", choices=("bf16", "no"), default="bf16", help="default bf16")
    optim.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false",
                       help="keep activations instead of recomputing them (faster, much more memory)")
    model = parser.add_argument_group("diffusion and model")
    model.add_argument("--mask_token", "--mask-token", dest="mask_token", type=int, default=None,
                       help="mask token id (default: the tokenizer's, else 811 for LLaMA-2)")
    model.add_argument("--anneal-steps", type=int, default=0,
                       help="steps of attention-mask annealing from causal to full (default 0 = none)")
    model.add_argument("--attn-implementation", choices=("auto", "flash_attention_2", "sdpa", "eager"), default="auto",
                       help="auto: flash_attention_2 when installed on CUDA, else sdpa")
    model.add_argument("--parallel_mode", "--parallel-mode", dest="parallel_mode", default="data_parallel",
                       help="data_parallel | ulysses_attn | ring_attn (alias dist_flash_attn)")
    model.add_argument("--sp-size", type=int, default=None,
                       help="ranks sharing one sequence in ulysses_attn / ring_attn (default: all processes)")
    model.add_argument("--peak-tflops", type=float, default=None,
                       help="per-device peak for the MFU estimate (default: known GPUs' bf16 peak)")
    return parser.parse_args(argv)


def validate_args(args: argparse.Namespace) -> None:
    """Reject bad settings with one-line errors before any process group or weights exist."""
    positive = ("max_train_steps", "save_every", "keep_checkpoints", "log_every", "seq_length", "buffer_files",
                "eval_every", "val_blocks", "eval_diffusion_steps", "eval_batch_size", "batch_size",
                "gradient_accumulate_every")
    for name in positive:
        if getattr(args, name) < 1:
            raise DiffusionInputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("warmup_steps", "anneal_steps"):
        if getattr(args, name) < 0:
            raise DiffusionInputError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not args.learning_rate > 0:
        raise DiffusionInputError(f"--learning-rate must be positive, got {args.learning_rate}")
    args.parallel_mode = canonical_mode(args.parallel_mode)
    args.data_entries = parse_data_config(args.data_config)
    for prefix, _ in args.data_entries:
        if not packed_files(args.dataset, prefix):
            raise DiffusionInputError(f"--dataset {args.dataset} holds no {prefix}*.bin files (from --data-config)")
    if args.val_dataset is not None and not packed_files(args.val_dataset):
        raise DiffusionInputError(f"--val-dataset {args.val_dataset} holds no *.bin packed files")
    cuda = torch.cuda.is_available()
    if args.attn_implementation == "auto":
        flash = cuda and is_flash_attn_2_available() and args.anneal_steps == 0 and args.parallel_mode != "ring_attn"
        args.attn_implementation = "flash_attention_2" if flash else "sdpa"
    if args.attn_implementation == "flash_attention_2" and not (cuda and is_flash_attn_2_available()):
        raise DiffusionInputError("--attn-implementation flash_attention_2 needs CUDA and the flash-attn package")
    if args.attn_implementation == "flash_attention_2" and args.anneal_steps > 0:
        raise DiffusionInputError("--anneal-steps passes an attention mask, which flash_attention_2 cannot take: use sdpa")
    if args.wandb:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise DiffusionInputError("--wandb needs the wandb package (pip install wandb)") from None


def adopt_cpu_deepspeed_world(accelerator: Accelerator) -> None:
    """Make accelerate see every rank of a DeepSpeed run on CPU.

    accelerate's backend detection has no CPU DeepSpeed case: DeepSpeed joins a gloo world of N ranks
    while accelerate records one process of index 0 on each, so every rank would act as the main
    process. Copy the real world from torch.distributed into accelerate's shared state.
    """
    if accelerator.distributed_type != DistributedType.DEEPSPEED or not dist.is_initialized():
        return
    if accelerator.num_processes == dist.get_world_size():
        return
    real = {"num_processes": dist.get_world_size(), "process_index": dist.get_rank(),
            "local_process_index": int(os.environ.get("LOCAL_RANK", 0))}
    for shared in (PartialState._shared_state, AcceleratorState._shared_state):
        shared.update(real)


def configure_deepspeed(accelerator: Accelerator, args: argparse.Namespace, layout: Layout) -> None:
    """Fill the DeepSpeed config's batch and clipping entries from the command line."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    config = plugin.deepspeed_config
    for block in ("optimizer", "scheduler"):
        if block in config:
            raise DiffusionInputError(
                f"the DeepSpeed config has a {block!r} block; train.py builds AdamW and the learning-rate schedule "
                "from its flags: remove the block"
            )
    wanted = {
        "train_micro_batch_size_per_gpu": args.batch_size,
        "gradient_accumulation_steps": args.gradient_accumulate_every,
        "train_batch_size": args.batch_size * args.gradient_accumulate_every * layout.dp_size,
        "gradient_clipping": args.max_grad_norm,
    }
    for key, value in wanted.items():
        current = config.get(key, "auto")
        if current == "auto":
            config[key] = value
        elif current != value:
            raise DiffusionInputError(
                f"the DeepSpeed config sets {key}={current} but the command line implies {value}; set it to \"auto\""
            )


def resolve_mask_id(requested: int | None, tokenizer: Any, config: PretrainedConfig, vocab_rows: int) -> int:
    """The mask id to train with; recorded in the tokenizer when it would not resolve to it on loading."""
    try:
        resolved = resolve_special_tokens(tokenizer, config.model_type, vocab_rows).mask_id
    except DiffusionInputError:
        if requested is None:
            raise
        resolved = None
    if requested is None:
        return resolved
    if not 0 <= requested < vocab_rows:
        raise DiffusionInputError(f"--mask_token {requested} is outside the model's {vocab_rows} embedding rows")
    if resolved != requested:
        tokenizer.mask_token = tokenizer.convert_ids_to_tokens(requested)
    return requested


def learning_rate(step: int, args: argparse.Namespace) -> float:
    """Constant learning rate after a linear warm-up over ``--warmup-steps`` optimizer steps."""
    if args.warmup_steps == 0:
        return args.learning_rate
    return args.learning_rate * min(1.0, (step + 1) / args.warmup_steps)


def noise_seed(seed: int, dp_rank: int, step: int, micro_step: int) -> int:
    """Seed of one micro-batch's noise: the same on every SP rank of a group, and after a resume."""
    return int(np.random.SeedSequence([seed, dp_rank, step, micro_step]).generate_state(1, dtype=np.uint64)[0] >> 1)


def train_batches(stream: Any, start_sample: int, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """``[batch, block]`` int64 batches from the rank's stream, starting at ``start_sample``."""
    blocks = stream.iterate(start_sample)
    while True:
        batch = torch.from_numpy(np.stack([next(blocks) for _ in range(batch_size)]))
        yield batch.to(device, non_blocking=True)


def validation_blocks(args: argparse.Namespace, block_size: int, layout: Layout) -> list[list[int]]:
    """This rank's share of the first ``--val-blocks`` validation blocks (equal counts on every rank)."""
    source = PackedSource(packed_files(args.val_dataset), block_size, seed=args.seed, shuffle=False,
                          name=f"--val-dataset {args.val_dataset}")
    count = min(args.val_blocks, len(source)) // layout.dp_size * layout.dp_size
    if count == 0:
        raise DiffusionInputError(
            f"--val-dataset holds {len(source)} blocks of {block_size} tokens, fewer than the {layout.dp_size} "
            "data-parallel ranks"
        )
    return [source.block(i).tolist() for i in range(layout.dp_rank, count, layout.dp_size)]


def evaluate(accelerator: Accelerator, model: Any, tokens: SpecialTokens, blocks: list[list[int]],
             args: argparse.Namespace) -> float:
    """Validation NLL per token (nats): the core's deterministic ELBO estimate, summed over ranks."""
    model.eval()
    denoiser = DiffusionLM(accelerator.unwrap_model(model), tokens)
    with torch.no_grad(), accelerator.autocast():
        results = sequence_nll(denoiser, blocks, steps=args.eval_diffusion_steps, seed=args.seed,
                               batch_size=args.eval_batch_size)
    model.train()
    totals = torch.tensor([sum(r[0] for r in results), sum(r[1] for r in results)], dtype=torch.float64,
                          device=accelerator.device)
    totals = accelerator.reduce(totals, reduction="sum")
    return float(totals[0] / totals[1].clamp(min=1))


@contextlib.contextmanager
def full_parameters(accelerator: Accelerator, model: torch.nn.Module) -> Iterator[None]:
    """Gather ZeRO-3 partitioned weights on every rank for the duration (no-op otherwise)."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None or plugin.zero_stage != 3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        yield


def save_final_model(accelerator: Accelerator, model: Any, tokenizer: Any, args: argparse.Namespace) -> Path:
    """Write ``<output-dir>/final`` in the released LLaMA layout, with the sampling length recorded."""
    target = Path(args.output_dir) / "final"
    unwrapped = accelerator.unwrap_model(model)
    accelerator.wait_for_everyone()
    with full_parameters(accelerator, unwrapped):
        if accelerator.is_main_process:
            save_diffusion_checkpoint(unwrapped, target, tokenizer=tokenizer, generation_length=args.seq_length)
    accelerator.wait_for_everyone()
    return target


class RunLog:
    """Per-step records: JSON lines in ``<output-dir>/train_log.jsonl``, trackers and the progress bar."""

    def __init__(self, accelerator: Accelerator, output_dir: Path, total: int, initial: int) -> None:
        self.accelerator = accelerator
        self.path = output_dir / LOG_FILE
        self.bar = tqdm(total=total, initial=initial, desc="training", dynamic_ncols=True,
                        disable=not accelerator.is_main_process)

    def write(self, record: dict[str, float]) -> None:
        self.accelerator.log(record, step=int(record["step"]))
        if self.accelerator.is_main_process:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            shown = {k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "val_loss", "lr", "tokens_per_s", "mfu")}
            self.bar.set_postfix(shown)
            logger.info("step %d: %s", record["step"], ", ".join(f"{k}={v}" for k, v in shown.items()))


def run(args: argparse.Namespace) -> Path:
    """The whole training run; returns the final model directory."""
    output_dir = Path(args.output_dir)
    block_size = args.seq_length + 1
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    uses_deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    sp_size = args.sp_size or (1 if args.parallel_mode == "data_parallel" else world_size)
    model_dir = resolve_checkpoint_dir(args.model)
    config = AutoConfig.from_pretrained(model_dir)
    check_mode(
        args.parallel_mode, world_size=world_size, sp_size=sp_size, block_size=block_size,
        attn_implementation=args.attn_implementation, anneal_steps=args.anneal_steps,
        uses_deepspeed=uses_deepspeed, cuda=torch.cuda.is_available(), num_heads=config.num_attention_heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
    )

    accelerator = Accelerator(
        cpu=not torch.cuda.is_available() and not uses_deepspeed,  # torchrun on CPU: gloo data parallelism
        gradient_accumulation_steps=args.gradient_accumulate_every,
        mixed_precision=args.mixed_precision,
        log_with="wandb" if args.wandb else None,
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=6))],
        **accelerator_kwargs(args.parallel_mode, sp_size, world_size // sp_size, block_size, args.attn_implementation),
    )
    adopt_cpu_deepspeed_world(accelerator)
    layout = Layout(args.parallel_mode, accelerator.process_index, accelerator.num_processes, sp_size)
    set_seed(args.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)

    stream = mixed_stream(args.dataset, args.data_entries, block_size, seed=args.seed, rank=layout.dp_rank,
                          world_size=layout.dp_size, buffer_files=args.buffer_files)
    val_blocks = validation_blocks(args, block_size, layout) if args.val_dataset else []

    tokenizer = load_tokenizer(model_dir)
    dtype = torch.bfloat16 if uses_deepspeed and args.mixed_precision == "bf16" else torch.float32
    model = load_causal_lm(model_dir, dtype=dtype, attn_implementation=args.attn_implementation)
    embedding = model.get_input_embeddings().weight
    vocab_rows = int(getattr(embedding, "ds_shape", embedding.shape)[0])  # ZeRO-3 loads partitioned weights
    mask_id = resolve_mask_id(args.mask_token, tokenizer, model.config, vocab_rows)
    tokens = SpecialTokens(mask_id=mask_id, pad_id=tokenizer.pad_token_id, bos_id=tokenizer.bos_token_id,
                           eos_id=tokenizer.eos_token_id)
    meter = ThroughputMeter(flops_per_token(model, block_size),
                            args.peak_tflops or detect_peak_tflops(accelerator.device), layout.world_size)
    model.train()
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    configure_deepspeed(accelerator, args, layout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, betas=(0.9, 0.95),
                                  weight_decay=args.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    strategy = make_strategy(layout)

    run_state = {
        "micro_batch_size": args.batch_size, "gradient_accumulation": args.gradient_accumulate_every,
        "data_parallel_size": layout.dp_size, "sequence_parallel_size": layout.sp_size,
        "seq_length": args.seq_length, "data_config": args.data_config, "seed": args.seed, "mask_id": mask_id,
        "parallel_mode": layout.mode, "global_batch_size": args.batch_size * args.gradient_accumulate_every * layout.dp_size,
    }
    start_step = 0
    checkpoint = find_resume_checkpoint(args.resume, output_dir)
    if checkpoint is not None:
        saved = read_state(checkpoint)
        check_resumable(saved, run_state, checkpoint)
        accelerator.load_state(str(checkpoint))
        start_step = int(saved["step"])
        logger.info("resumed from %s at step %d", checkpoint, start_step)
    if args.wandb:
        accelerator.init_trackers(args.wandb, config={k: v for k, v in vars(args).items() if k != "data_entries"},
                                  init_kwargs={"wandb": {"name": output_dir.name}})

    samples_per_step = args.batch_size * args.gradient_accumulate_every
    batches = train_batches(stream, start_step * samples_per_step, args.batch_size, accelerator.device)
    tokens_per_step = samples_per_step * layout.dp_size * block_size
    generator = torch.Generator(accelerator.device)
    log = RunLog(accelerator, output_dir, args.max_train_steps, start_step)
    sums = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # loss, unweighted loss, micro-steps
    if val_blocks and start_step == 0:
        log.write({"step": 0, "val_loss": evaluate(accelerator, model, tokens, val_blocks, args)})
    if start_step >= args.max_train_steps:
        logger.info("the checkpoint is at step %d, --max-train-steps is %d: nothing to train", start_step,
                    args.max_train_steps)

    def backward(loss: torch.Tensor) -> None:
        accelerator.backward(loss)

    for step in range(start_step, args.max_train_steps):
        lr = learning_rate(step, args)
        for group in optimizer.param_groups:
            group["lr"] = lr
        anneal = anneal_ratio(step, args.anneal_steps) if args.anneal_steps else 1.0
        for micro_step in range(args.gradient_accumulate_every):
            generator.manual_seed(noise_seed(args.seed, layout.dp_rank, step, micro_step))
            with accelerator.accumulate(model):
                result = strategy.step(model, next(batches), mask_id, generator, anneal, backward)
                if accelerator.sync_gradients:  # DeepSpeed clips inside its step and reports the norm here
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            sums += torch.stack([result.loss.double(), result.unweighted_loss.double(), torch.ones_like(sums[0])])
        meter.add(tokens_per_step)
        log.bar.update(1)
        done = step + 1
        if done % args.log_every == 0 or done == args.max_train_steps:
            averaged = accelerator.reduce(sums, reduction="mean")
            record = {"step": done, "loss": float(averaged[0] / averaged[2]),
                      "unweighted_loss": float(averaged[1] / averaged[2]), "grad_norm": float(grad_norm), "lr": lr,
                      "anneal_ratio": anneal,
                      **meter.report()}
            sums.zero_()
            log.write(record)
        if val_blocks and (done % args.eval_every == 0 or done == args.max_train_steps):
            log.write({"step": done, "val_loss": evaluate(accelerator, model, tokens, val_blocks, args)})
        if done % args.save_every == 0 or done == args.max_train_steps:
            save_checkpoint(accelerator, output_dir, {**run_state, "step": done}, args.keep_checkpoints)
    log.bar.close()
    final = save_final_model(accelerator, model, tokenizer, args)
    accelerator.end_training()
    return final


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        validate_args(args)
        final = run(args)
    except (DiffusionInputError, PackedDataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logger.info("final model: %s", final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
