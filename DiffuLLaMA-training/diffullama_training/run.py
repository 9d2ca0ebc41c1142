"""Adapt an autoregressive LLaMA into a diffusion LM (DiffuLLaMA) on TinyLlama packed data.

    accelerate launch --config_file accelerate_configs/single_node.yaml train.py \\
        --batch-size 60 --gradient-accumulate-every 4 --output-dir output/7B_diffusion --seed 2829 \\
        --max-train-steps 20000 --learning-rate 2e-5 --dataset data/slim_star_combined \\
        --model meta-llama/Llama-2-7b-hf --seq-length 2048 --parallel_mode data_parallel

Every step draws a noise level per sequence, masks tokens and minimises the ELBO-weighted masked
cross-entropy of ``llamafactory.ddm`` (docs/design.md#objective) with AdamW (0.9, 0.95), weight decay 0.1 and a constant
learning rate after an optional linear warm-up. The loss only upcasts the masked rows, in chunks.
Training state is saved atomically every ``--save-every`` steps and at the end; ``--resume`` continues
a run with the same global batch and the same data order; an ``--output-dir`` holding another run is
refused unless ``--overwrite`` or ``--resume`` is given. The final weights go to ``<output-dir>`` itself
(as the original wrote them) in the released DiffuLLaMA layout (loadable by ``inf_diffullama.py``). With
``--mask_token`` the base model needs no tokenizer: the packed data are token ids already.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed
from transformers import AutoConfig, PretrainedConfig
from transformers.utils import is_flash_attn_2_available

from llamafactory.command_line import FLASH_ATTN_INSTALL, run_command
from llamafactory.ddm import (
    SpecialTokens,
    check_window,
    load_causal_lm,
    load_tokenizer,
    recorded_mask_id,
    resolve_special_tokens,
)
from llamafactory.errors import UserInputError
from llamafactory.utils.distributed import Launch, close_process_group
from llamafactory.utils.files import check_writable_folder
from llamafactory.utils.hub import resolve_checkpoint_dir

from .checkpointing import (
    check_resumable,
    clear_previous_run,
    find_resume_checkpoint,
    previous_run_files,
    read_state,
    truncate_log,
)
from .deepspeed_support import configure_batch, embedding_rows, start_cpu_deepspeed_processes, uses_deepspeed
from .loop import Trainer, train_batches
from .packed_dataset import PackedSource, mixed_stream, packed_files, parse_data_config
from .parallel import Layout, accelerator_kwargs, canonical_mode, check_mode, make_strategy
from .throughput import ThroughputMeter, detect_peak_tflops, flops_per_token

logger = logging.getLogger("train")

DEFAULT_DATA_CONFIG = "train_slim:0.693584,train_star:0.306416"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", required=True, help="checkpoints, logs and the final model (final/)")
    run.add_argument("--model", default="meta-llama/Llama-2-7b-hf", help="base causal LM (directory or Hub id)")
    run.add_argument("--seed", type=int, default=42, help="seed of data order and noise (default 42)")
    run.add_argument("--max-train-steps", type=int, default=400, help="optimizer steps in total (default 400)")
    run.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                     help="continue from CHECKPOINT, or with no value from the latest one in --output-dir (if any)")
    run.add_argument("--overwrite", action="store_true",
                     help="start afresh in an --output-dir that holds another run (its checkpoints and log are removed)")
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
    optim.add_argument("--offload-activations", action="store_true",
                       help="hold the checkpointed activations in pinned CPU memory (long contexts; slower)")
    model = parser.add_argument_group("diffusion and model")
    model.add_argument("--mask_token", "--mask-token", dest="mask_token", type=int, default=None,
                       help="mask token id (default: the tokenizer's, else 811 for LLaMA-2); "
                            "with it the base model needs no tokenizer")
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
            raise UserInputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("warmup_steps", "anneal_steps"):
        if getattr(args, name) < 0:
            raise UserInputError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not args.learning_rate > 0:
        raise UserInputError(f"--learning-rate must be positive, got {args.learning_rate}")
    args.parallel_mode = canonical_mode(args.parallel_mode)
    args.data_entries = parse_data_config(args.data_config)
    for prefix, _ in args.data_entries:
        if not packed_files(args.dataset, prefix):
            raise UserInputError(f"--dataset {args.dataset} holds no {prefix}*.bin files (from --data-config)")
    if args.val_dataset is not None and not packed_files(args.val_dataset):
        raise UserInputError(f"--val-dataset {args.val_dataset} holds no *.bin packed files")
    cuda = torch.cuda.is_available()
    if args.offload_activations and not (cuda and args.gradient_checkpointing):
        raise UserInputError("--offload-activations moves checkpointed activations to pinned host memory: it needs "
                                  "CUDA and gradient checkpointing")
    if args.attn_implementation == "auto":
        flash = cuda and is_flash_attn_2_available() and args.anneal_steps == 0 and args.parallel_mode != "ring_attn"
        args.attn_implementation = "flash_attention_2" if flash else "sdpa"
    if args.attn_implementation == "flash_attention_2" and not (cuda and is_flash_attn_2_available()):
        raise UserInputError(f"--attn-implementation flash_attention_2 needs CUDA and the flash-attn package "
                             f"({FLASH_ATTN_INSTALL})")
    if args.attn_implementation == "flash_attention_2" and args.anneal_steps > 0:
        raise UserInputError("--anneal-steps passes an attention mask, which flash_attention_2 cannot take: use sdpa")
    if args.wandb and importlib.util.find_spec("wandb") is None:
        raise UserInputError("--wandb needs the wandb package (pip install wandb)")
    check_output_dir(args)


def check_output_dir(args: argparse.Namespace) -> None:
    """An --output-dir holding another run is only used with --resume (continue it) or --overwrite (replace it)."""
    if args.resume is not None and args.overwrite:
        raise UserInputError("--resume continues the run in --output-dir and --overwrite replaces it: give one")
    output_dir = Path(args.output_dir)
    if output_dir.is_dir() and any(output_dir.iterdir()) and args.resume is None and not args.overwrite:
        shown = ", ".join(sorted(path.name for path in output_dir.iterdir())[:5])
        raise UserInputError(
            f"--output-dir {output_dir} is not empty ({shown}, ...): pass --resume to continue the run there, "
            "--overwrite to replace it, or choose another folder"
        )
    check_writable_folder(output_dir, "--output-dir")


def resolve_mask_id(requested: int | None, tokenizer: Any | None, config: PretrainedConfig, vocab_rows: int) -> int:
    """The mask id to train with; also recorded in the tokenizer (if any) when it would not resolve to it."""
    try:
        resolved = resolve_special_tokens(tokenizer, config.model_type, vocab_rows, config=config,
                                          recorded_mask_id=recorded_mask_id(config)).mask_id
    except UserInputError:
        if requested is None:
            raise
        resolved = None
    if requested is None:
        return resolved
    if not 0 <= requested < vocab_rows:
        raise UserInputError(f"--mask_token {requested} is outside the model's {vocab_rows} embedding rows")
    if resolved != requested and tokenizer is not None:
        tokenizer.mask_token = tokenizer.convert_ids_to_tokens(requested)
    return requested


def validation_blocks(args: argparse.Namespace, block_size: int, layout: Layout, vocab_size: int) -> list[list[int]]:
    """This rank's share of the first ``--val-blocks`` validation blocks (equal counts on every rank)."""
    source = PackedSource(packed_files(args.val_dataset), block_size, seed=args.seed, shuffle=False,
                          name=f"--val-dataset {args.val_dataset}", vocab_size=vocab_size)
    count = min(args.val_blocks, len(source)) // layout.dp_size * layout.dp_size
    if count == 0:
        raise UserInputError(
            f"--val-dataset holds {len(source)} blocks of {block_size} tokens, fewer than the {layout.dp_size} "
            "data-parallel ranks"
        )
    return [source.block(i).tolist() for i in range(layout.dp_rank, count, layout.dp_size)]


def load_run_tokenizer(args: argparse.Namespace, model_dir: Path) -> Any | None:
    """The base model's tokenizer; None when it has none and ``--mask_token`` names the mask id."""
    try:
        return load_tokenizer(model_dir)
    except UserInputError as error:
        if args.mask_token is None:
            raise UserInputError(
                f"{error}; the packed data are token ids already, so pass --mask_token ID to train without one"
            ) from None
    logger.info("no tokenizer in %s: training on the packed token ids with --mask_token %d", model_dir, args.mask_token)
    return None


def special_tokens(tokenizer: Any | None, config: PretrainedConfig, mask_id: int) -> SpecialTokens:
    """The ids the loss and validation need: the tokenizer's, else the model config's."""
    source = tokenizer if tokenizer is not None else config
    return SpecialTokens(mask_id=mask_id, pad_id=source.pad_token_id, bos_id=source.bos_token_id,
                         eos_id=source.eos_token_id)


def load_model(args: argparse.Namespace, model_dir: Path, dtype: torch.dtype) -> tuple[Any, Any, SpecialTokens]:
    """The base model (bidirectional, in training mode), its tokenizer (or None) and the diffusion special tokens."""
    tokenizer = load_run_tokenizer(args, model_dir)
    model = load_causal_lm(model_dir, dtype=dtype, attn_implementation=args.attn_implementation)
    mask_id = resolve_mask_id(args.mask_token, tokenizer, model.config, embedding_rows(model))
    tokens = special_tokens(tokenizer, model.config, mask_id)
    model.train()
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False},
                                              offload=args.offload_activations)
    return model, tokenizer, tokens


def run(args: argparse.Namespace) -> Path:
    """Check the set-up, build the accelerator, data, model and optimizer, train; returns the final model."""
    output_dir = Path(args.output_dir)
    block_size = args.seq_length + 1
    world_size = Launch.from_env().world_size
    deepspeed = uses_deepspeed()
    sp_size = args.sp_size or (1 if args.parallel_mode == "data_parallel" else world_size)
    model_dir = resolve_checkpoint_dir(args.model)
    config = AutoConfig.from_pretrained(model_dir)
    check_window(config, block_size, f"--seq-length {args.seq_length} (blocks of seq_length + 1 tokens)")
    check_mode(
        args.parallel_mode, world_size=world_size, sp_size=sp_size, block_size=block_size,
        attn_implementation=args.attn_implementation, anneal_steps=args.anneal_steps, uses_deepspeed=deepspeed,
        cuda=torch.cuda.is_available(), num_heads=config.num_attention_heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
    )
    checkpoint = find_resume_checkpoint(args.resume, output_dir)
    saved = read_state(checkpoint) if checkpoint is not None else None

    start_cpu_deepspeed_processes()
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available() and not deepspeed,  # torchrun on CPU: gloo data parallelism
        gradient_accumulation_steps=args.gradient_accumulate_every,
        mixed_precision=args.mixed_precision,
        log_with="wandb" if args.wandb else None,
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=6))],
        **accelerator_kwargs(args.parallel_mode, sp_size, world_size // sp_size, block_size, args.attn_implementation),
    )
    layout = Layout(args.parallel_mode, accelerator.process_index, accelerator.num_processes, sp_size)
    set_seed(args.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if args.overwrite and previous_run_files(output_dir):
            clear_previous_run(output_dir)
    stream = mixed_stream(args.dataset, args.data_entries, block_size, seed=args.seed, rank=layout.dp_rank,
                          world_size=layout.dp_size, buffer_files=args.buffer_files, vocab_size=config.vocab_size)
    val_blocks = validation_blocks(args, block_size, layout, config.vocab_size) if args.val_dataset else []

    dtype = torch.bfloat16 if deepspeed and args.mixed_precision == "bf16" else torch.float32
    model, tokenizer, tokens = load_model(args, model_dir, dtype)
    meter = ThroughputMeter(flops_per_token(model, block_size),
                            args.peak_tflops or detect_peak_tflops(accelerator.device), layout.world_size)
    configure_batch(accelerator, args.batch_size, args.gradient_accumulate_every, layout.dp_size, args.max_grad_norm)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, betas=(0.9, 0.95),
                                  weight_decay=args.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)

    run_state = {
        "micro_batch_size": args.batch_size, "gradient_accumulation": args.gradient_accumulate_every,
        "data_parallel_size": layout.dp_size, "sequence_parallel_size": layout.sp_size,
        "seq_length": args.seq_length, "data_config": args.data_config, "seed": args.seed,
        "mask_id": tokens.mask_id, "parallel_mode": layout.mode,
        "global_batch_size": args.batch_size * args.gradient_accumulate_every * layout.dp_size,
    }
    start_step = 0
    if saved is not None:
        check_resumable(saved, run_state, checkpoint)
        accelerator.load_state(str(checkpoint))
        start_step = int(saved["step"])
        logger.info("resumed from %s at step %d", checkpoint, start_step)
    if accelerator.is_main_process and args.resume is not None:
        truncate_log(output_dir, start_step)
    if args.wandb:
        accelerator.init_trackers(args.wandb, config={k: v for k, v in vars(args).items() if k != "data_entries"},
                                  init_kwargs={"wandb": {"name": output_dir.name}})

    samples_per_step = args.batch_size * args.gradient_accumulate_every
    trainer = Trainer(
        args=args, accelerator=accelerator, model=model, optimizer=optimizer, strategy=make_strategy(layout),
        layout=layout, tokens=tokens, run_state=run_state, val_blocks=val_blocks, meter=meter,
        batches=train_batches(stream, start_step * samples_per_step, args.batch_size, accelerator.device),
    )
    trainer.train(start_step)
    final = trainer.save_final_model(tokenizer)
    accelerator.end_training()
    close_process_group(synchronize=True)
    return final


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)

    def train() -> None:
        validate_args(args)
        logger.info("final model: %s", run(args))

    return run_command(train)
