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
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed
from transformers import AutoConfig, PretrainedConfig

from llamafactory.ddm import (
    SpecialTokens,
    check_window,
    checkpoint_special_tokens,
    load_causal_lm,
    load_tokenizer,
)
from llamafactory.ddm.attention import check_block_kernel
from llamafactory.entry_points import run_command
from llamafactory.errors import UserInputError
from llamafactory.utils.distributed import Launch, close_process_group
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
from .packed_dataset import PackedSource, mixed_stream, packed_files
from .parallel import Layout, accelerator_kwargs, check_mode, make_plan
from .settings import TrainSettings, settings_from_args
from .settings import parse_args as parse_flags
from .throughput import ThroughputMeter, detect_peak_tflops, flops_per_token

logger = logging.getLogger("train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of train.py, unchecked (this module's docstring is its --help text)."""
    return parse_flags(argv, description=__doc__)


def resolve_mask_id(requested: int | None, tokenizer: Any | None, config: PretrainedConfig, vocab_rows: int) -> int:
    """The mask id to train with; also recorded in the tokenizer (if any) when it would not resolve to it."""
    try:
        resolved = checkpoint_special_tokens(tokenizer, config, vocab_rows).mask_id
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


def validation_blocks(settings: TrainSettings, layout: Layout, vocab_size: int) -> list[list[int]]:
    """This rank's share of the first ``--val-blocks`` validation samples (equal counts on every rank)."""
    sample_tokens = settings.sample_tokens
    source = PackedSource(packed_files(settings.val_dataset), sample_tokens, seed=settings.seed, shuffle=False,
                          name=f"--val-dataset {settings.val_dataset}", vocab_size=vocab_size)
    count = min(settings.val_blocks, len(source)) // layout.dp_size * layout.dp_size
    if count == 0:
        raise UserInputError(
            f"--val-dataset holds {len(source)} samples of {sample_tokens} tokens, fewer than the {layout.dp_size} "
            "data-parallel ranks"
        )
    return [source.sample(i).tolist() for i in range(layout.dp_rank, count, layout.dp_size)]


def load_run_tokenizer(mask_token: int | None, model_dir: Path) -> Any | None:
    """The base model's tokenizer; None when it has none and ``--mask_token`` names the mask id."""
    try:
        return load_tokenizer(model_dir)
    except UserInputError as error:
        if mask_token is None:
            raise UserInputError(
                f"{error}; the packed data are token ids already, so pass --mask_token ID to train without one"
            ) from None
    logger.info("no tokenizer in %s: training on the packed token ids with --mask_token %d", model_dir, mask_token)
    return None


def special_tokens(tokenizer: Any | None, config: PretrainedConfig, mask_id: int) -> SpecialTokens:
    """The ids the loss and validation need: the tokenizer's, else the model config's."""
    source = tokenizer if tokenizer is not None else config
    return SpecialTokens(mask_id=mask_id, pad_id=source.pad_token_id, bos_id=source.bos_token_id,
                         eos_id=source.eos_token_id)


def load_model(settings: TrainSettings, model_dir: Path, dtype: torch.dtype) -> tuple[Any, Any, SpecialTokens]:
    """The base model (bidirectional, in training mode), its tokenizer (or None) and the diffusion special tokens."""
    tokenizer = load_run_tokenizer(settings.mask_token, model_dir)
    model = load_causal_lm(model_dir, dtype=dtype, attn_implementation=settings.attn_implementation)
    mask_id = resolve_mask_id(settings.mask_token, tokenizer, model.config, embedding_rows(model))
    tokens = special_tokens(tokenizer, model.config, mask_id)
    model.train()
    if settings.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False},
                                              offload=settings.offload_activations)
    return model, tokenizer, tokens


def train(settings: TrainSettings) -> Path:
    """Check the set-up, build the accelerator, data, model and optimizer, train; returns the final model."""
    output_dir = settings.output_dir
    sample_tokens = settings.sample_tokens
    world_size = Launch.from_env().world_size
    deepspeed = uses_deepspeed()
    sp_size = settings.sp_size or (1 if settings.parallel_mode == "data_parallel" else world_size)
    model_dir = resolve_checkpoint_dir(settings.model)
    config = AutoConfig.from_pretrained(model_dir)
    check_window(config, sample_tokens, f"--seq-length {settings.seq_length} (samples of seq_length + 1 tokens)")
    if settings.block_size is not None:
        check_block_kernel(settings.attn_implementation, config.model_type)
    check_mode(
        settings.parallel_mode, world_size=world_size, sp_size=sp_size, sample_tokens=sample_tokens,
        attn_implementation=settings.attn_implementation, anneal_steps=settings.anneal_steps, uses_deepspeed=deepspeed,
        cuda=torch.cuda.is_available(), num_heads=config.num_attention_heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
    )
    checkpoint = find_resume_checkpoint(settings.resume, output_dir)
    saved = read_state(checkpoint) if checkpoint is not None else None

    start_cpu_deepspeed_processes()
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available() and not deepspeed,  # torchrun on CPU: gloo data parallelism
        gradient_accumulation_steps=settings.gradient_accumulate_every,
        mixed_precision=settings.mixed_precision,
        log_with="wandb" if settings.wandb else None,
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=6))],
        **accelerator_kwargs(settings.parallel_mode, sp_size, world_size // sp_size, sample_tokens,
                               settings.attn_implementation),
    )
    layout = Layout(settings.parallel_mode, accelerator.process_index, accelerator.num_processes, sp_size)
    set_seed(settings.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if settings.overwrite and previous_run_files(output_dir):
            clear_previous_run(output_dir)
    stream = mixed_stream(settings.dataset, settings.data_entries, sample_tokens, seed=settings.seed, rank=layout.dp_rank,
                          world_size=layout.dp_size, buffer_files=settings.buffer_files, vocab_size=config.vocab_size)
    val_blocks = validation_blocks(settings, layout, config.vocab_size) if settings.val_dataset else []

    dtype = torch.bfloat16 if deepspeed and settings.mixed_precision == "bf16" else torch.float32
    model, tokenizer, tokens = load_model(settings, model_dir, dtype)
    columns = settings.forward_columns  # a sample's columns; the meter counts sample tokens
    meter = ThroughputMeter(flops_per_token(model, columns) * columns / sample_tokens,
                            settings.peak_tflops or detect_peak_tflops(accelerator.device), layout.world_size)
    configure_batch(accelerator, settings, layout.dp_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, betas=(0.9, 0.95),
                                  weight_decay=settings.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)

    run_state = {
        "micro_batch_size": settings.batch_size, "gradient_accumulation": settings.gradient_accumulate_every,
        "data_parallel_size": layout.dp_size, "sequence_parallel_size": layout.sp_size,
        "seq_length": settings.seq_length, "data_config": settings.data_config, "seed": settings.seed,
        "mask_id": tokens.mask_id, "parallel_mode": layout.mode,
        "global_batch_size": settings.global_batch_size(layout.dp_size), "block_size": settings.block_size,
    }
    start_step = 0
    if saved is not None:
        check_resumable(saved, run_state, checkpoint)
        accelerator.load_state(str(checkpoint))
        start_step = int(saved["step"])
        logger.info("resumed from %s at step %d", checkpoint, start_step)
    if accelerator.is_main_process and settings.resume is not None:
        truncate_log(output_dir, start_step)
    if settings.wandb:
        accelerator.init_trackers(settings.wandb, config=settings.tracker_config(),
                                  init_kwargs={"wandb": {"name": output_dir.name}})

    trainer = Trainer(
        settings=settings, accelerator=accelerator, model=model, optimizer=optimizer,
        plan=make_plan(layout, settings.block_size),
        layout=layout, tokens=tokens, run_state=run_state, val_blocks=val_blocks, meter=meter,
        batches=train_batches(stream, start_step * settings.samples_per_step, settings.batch_size, accelerator.device),
    )
    trainer.train(start_step)
    final = trainer.save_final_model(tokenizer)
    accelerator.end_training()
    close_process_group(synchronize=True)
    return final


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)

    def command() -> None:
        logger.info("final model: %s", train(settings_from_args(args)))

    return run_command(command)
