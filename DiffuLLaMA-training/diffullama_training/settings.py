"""The settings of one ``train.py`` run: typed, validated and resolved once from the command line.

``parse_args`` reads the flags (their defaults are the fields' defaults below); ``settings_from_args`` checks
them against this machine and the disk (dataset files, CUDA, flash-attn, ``--output-dir``) and returns a
frozen :class:`TrainSettings` that nothing changes afterwards. The batch arithmetic every part of the
trainer needs (samples per step, global batch, tokens per step) is derived here and only here.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers.utils import is_flash_attn_2_available

from llamafactory.ddm import annealed_steps
from llamafactory.ddm.attention import check_block_size
from llamafactory.entry_points import FLASH_ATTN_INSTALL
from llamafactory.errors import UserInputError
from llamafactory.utils.files import check_writable_folder

from .packed_dataset import packed_files, parse_data_config
from .parallel import canonical_mode

DEFAULT_DATA_CONFIG = "train_slim:0.693584,train_star:0.306416"
ATTENTION_CHOICES = ("auto", "flash_attention_2", "sdpa", "eager")
POSITIVE = ("max_train_steps", "save_every", "keep_checkpoints", "log_every", "seq_length", "buffer_files",
            "eval_every", "val_blocks", "eval_diffusion_steps", "eval_batch_size", "batch_size",
            "gradient_accumulate_every")


@dataclass(frozen=True)
class TrainSettings:
    """Every setting of a run, by its flag's name (``--max-train-steps`` -> ``max_train_steps``).

    Values are checked on construction; ``attn_implementation`` is never ``auto`` and ``parallel_mode``
    is the canonical name (``dist_flash_attn`` -> ``ring_attn``). ``block_size`` is the block of block
    diffusion (docs/design.md#block-diffusion; None = full-sequence diffusion); a training sample holds
    :attr:`sample_tokens` tokens.
    """

    output_dir: Path
    dataset: Path
    model: str = "meta-llama/Llama-2-7b-hf"
    seed: int = 42
    max_train_steps: int = 400
    resume: str | None = None
    overwrite: bool = False
    save_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    wandb: str | None = None
    data_config: str = DEFAULT_DATA_CONFIG
    seq_length: int = 2048
    buffer_files: int = 8
    val_dataset: Path | None = None
    eval_every: int = 1000
    val_blocks: int = 64
    eval_diffusion_steps: int = 32
    eval_batch_size: int = 8
    batch_size: int = 1
    gradient_accumulate_every: int = 8
    learning_rate: float = 2e-5
    warmup_steps: int = 0
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    mixed_precision: str = "bf16"
    gradient_checkpointing: bool = True
    offload_activations: bool = False
    mask_token: int | None = None
    anneal_steps: int = 0
    block_size: int | None = None
    attn_implementation: str = "sdpa"
    parallel_mode: str = "data_parallel"
    sp_size: int | None = None
    peak_tflops: float | None = None
    data_entries: tuple[tuple[str, float], ...] = field(init=False)

    def __post_init__(self) -> None:
        for name in POSITIVE:
            if getattr(self, name) < 1:
                raise UserInputError(f"{flag(name)} must be at least 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise UserInputError(f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        if annealed_steps(self.anneal_steps) and self.attn_implementation == "flash_attention_2":
            raise UserInputError(f"--anneal-steps {self.anneal_steps} passes an attention mask, which "
                                 "flash_attention_2 cannot take: use --attn-implementation sdpa")
        if not self.learning_rate > 0:
            raise UserInputError(f"--learning-rate must be positive, got {self.learning_rate}")
        if self.attn_implementation not in ATTENTION_CHOICES[1:]:
            raise UserInputError(f"--attn-implementation {self.attn_implementation!r}: expected one of "
                                 f"{', '.join(ATTENTION_CHOICES[1:])} once resolved")
        object.__setattr__(self, "parallel_mode", canonical_mode(self.parallel_mode))
        self._check_block_size()
        object.__setattr__(self, "data_entries", tuple(parse_data_config(self.data_config)))

    def _check_block_size(self) -> None:
        """A block size is an integer >= 1 and trains only data-parallel (the sharded modes take no 4D mask)."""
        try:
            check_block_size(self.block_size)
        except UserInputError as error:
            raise UserInputError(f"--block-size: {error}") from None
        if self.block_size is not None and self.parallel_mode != "data_parallel":
            raise UserInputError(
                f"--block-size {self.block_size} needs --parallel_mode data_parallel: {self.parallel_mode} shards "
                "each sample across ranks and cannot take the block-causal [x_t ; x_0] attention mask"
            )

    @property
    def sample_tokens(self) -> int:
        """Tokens per training sample: ``seq_length + 1`` (output i predicts token i + 1)."""
        return self.seq_length + 1

    @property
    def forward_columns(self) -> int:
        """Columns of one sample's training forward: ``2 * sample_tokens`` (``[x_t ; x_0]``) under a block size
        smaller than the sample, else the sample itself (``training_loss``'s one-block case)."""
        blocks = self.block_size is not None and self.block_size < self.sample_tokens
        return 2 * self.sample_tokens if blocks else self.sample_tokens

    @property
    def samples_per_step(self) -> int:
        """Blocks one data-parallel rank consumes per optimizer step (micro-batch x accumulation)."""
        return self.batch_size * self.gradient_accumulate_every

    def global_batch_size(self, dp_size: int) -> int:
        """Blocks per optimizer step over all ``dp_size`` data-parallel replicas."""
        return self.samples_per_step * dp_size

    def tokens_per_step(self, dp_size: int) -> int:
        return self.global_batch_size(dp_size) * self.sample_tokens

    def learning_rate_at(self, step: int) -> float:
        """Constant learning rate after a linear warm-up over ``--warmup-steps`` optimizer steps."""
        if self.warmup_steps == 0:
            return self.learning_rate
        return self.learning_rate * min(1.0, (step + 1) / self.warmup_steps)

    def tracker_config(self) -> dict[str, Any]:
        """The settings as plain values, for the experiment tracker."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "data_entries"}
        return {name: str(value) if isinstance(value, Path) else value for name, value in values.items()}


def flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainSettings) if f.default is not dataclasses.MISSING}


def parse_args(argv: list[str] | None = None, description: str | None = None) -> argparse.Namespace:
    """The flags as given (defaults filled in), not yet checked: :func:`settings_from_args` does that."""
    d = _DEFAULTS
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    run = parser.add_argument_group("run")
    run.add_argument("--output-dir", required=True, help="checkpoints, logs and the final model (written into it)")
    run.add_argument("--model", default=d["model"], help="base causal LM (directory or Hub id)")
    run.add_argument("--seed", type=int, default=d["seed"], help=f"seed of data order and noise (default {d['seed']})")
    run.add_argument("--max-train-steps", type=int, default=d["max_train_steps"],
                     help=f"optimizer steps in total (default {d['max_train_steps']})")
    run.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                     help="continue from CHECKPOINT, or with no value from the latest one in --output-dir (if any)")
    run.add_argument("--overwrite", action="store_true",
                     help="start afresh in an --output-dir that holds another run (its checkpoints and log are removed)")
    run.add_argument("--save-every", type=int, default=d["save_every"],
                     help=f"save the training state every N steps (default {d['save_every']})")
    run.add_argument("--keep-checkpoints", type=int, default=d["keep_checkpoints"],
                     help=f"training states kept on disk (default {d['keep_checkpoints']})")
    run.add_argument("--log-every", type=int, default=d["log_every"],
                     help=f"log loss, lr, tokens/s and MFU every N steps (default {d['log_every']})")
    run.add_argument("--wandb", metavar="PROJECT", default=None, help="also log to this Weights & Biases project")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True, help="directory of TinyLlama packed files (prepare_data.py)")
    data.add_argument("--data-config", default=d["data_config"],
                      help=f"file prefixes and mixing weights, PREFIX:WEIGHT,... (default {d['data_config']})")
    data.add_argument("--seq-length", type=int, default=d["seq_length"],
                      help=f"tokens per sample; samples hold seq_length + 1 (default {d['seq_length']})")
    data.add_argument("--buffer-files", type=int, default=d["buffer_files"],
                      help=f"files shuffled together per rank (default {d['buffer_files']})")
    data.add_argument("--val-dataset", default=None, help="directory of packed validation files (*.bin)")
    data.add_argument("--eval-every", type=int, default=d["eval_every"],
                      help="validate every N steps when --val-dataset is set")
    data.add_argument("--val-blocks", type=int, default=d["val_blocks"],
                      help=f"validation samples, split over ranks (default {d['val_blocks']})")
    data.add_argument("--eval-diffusion-steps", type=int, default=d["eval_diffusion_steps"],
                      help=f"noise levels of the ELBO estimate (default {d['eval_diffusion_steps']})")
    data.add_argument("--eval-batch-size", type=int, default=d["eval_batch_size"],
                      help=f"rows per validation forward (default {d['eval_batch_size']})")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--batch-size", type=int, default=d["batch_size"],
                       help=f"sequences per device per micro-step (default {d['batch_size']})")
    optim.add_argument("--gradient-accumulate-every", type=int, default=d["gradient_accumulate_every"],
                       help=f"micro-steps per optimizer step (default {d['gradient_accumulate_every']})")
    optim.add_argument("--learning-rate", type=float, default=d["learning_rate"],
                       help=f"constant learning rate (default {d['learning_rate']})")
    optim.add_argument("--warmup-steps", type=int, default=d["warmup_steps"],
                       help=f"linear warm-up steps (default {d['warmup_steps']})")
    optim.add_argument("--weight-decay", type=float, default=d["weight_decay"],
                       help=f"AdamW weight decay (default {d['weight_decay']})")
    optim.add_argument("--max-grad-norm", type=float, default=d["max_grad_norm"],
                       help=f"gradient clipping norm (default {d['max_grad_norm']})")
    optim.add_argument("--mixed-precision", choices=("bf16", "no"), default=d["mixed_precision"],
                       help=f"default {d['mixed_precision']}")
    optim.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false",
                       help="keep activations instead of recomputing them (faster, much more memory)")
    optim.add_argument("--offload-activations", action="store_true",
                       help="hold the checkpointed activations in pinned CPU memory (long contexts; slower)")
    model = parser.add_argument_group("diffusion and model")
    model.add_argument("--mask_token", "--mask-token", dest="mask_token", type=int, default=None,
                       help="mask token id (default: the tokenizer's, else 811 for LLaMA-2); "
                            "with it the base model needs no tokenizer")
    model.add_argument("--anneal-steps", type=int, default=d["anneal_steps"],
                       help="steps of attention-mask annealing from causal to full (default 0; 0 and 1 = none)")
    model.add_argument("--block-size", type=int, default=None, metavar="B",
                       help="block diffusion: blocks of B tokens, left to right, diffusion inside each block "
                            "(default: unset, full-sequence diffusion); data_parallel with sdpa or eager only")
    model.add_argument("--attn-implementation", choices=ATTENTION_CHOICES, default="auto",
                       help="auto: flash_attention_2 when installed on CUDA (and neither annealing nor a block "
                            "size), else sdpa")
    model.add_argument("--parallel_mode", "--parallel-mode", dest="parallel_mode", default=d["parallel_mode"],
                       help="data_parallel | ulysses_attn | ring_attn (alias dist_flash_attn)")
    model.add_argument("--sp-size", type=int, default=None,
                       help="ranks sharing one sequence in ulysses_attn / ring_attn (default: all processes)")
    model.add_argument("--peak-tflops", type=float, default=None,
                       help="per-device peak for the MFU estimate (default: known GPUs' bf16 peak)")
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    """Check the flags against this machine and the disk; one-line errors before any process group exists."""
    cuda = torch.cuda.is_available()
    flash_here = cuda and is_flash_attn_2_available()
    attention = args.attn_implementation
    if attention == "auto":
        mode = canonical_mode(args.parallel_mode)
        masked = annealed_steps(args.anneal_steps) or args.block_size is not None
        flash = flash_here and not masked and mode != "ring_attn"
        attention = "flash_attention_2" if flash else "sdpa"
    elif attention == "flash_attention_2" and not flash_here:
        raise UserInputError(f"--attn-implementation flash_attention_2 needs CUDA and the flash-attn package "
                             f"({FLASH_ATTN_INSTALL})")
    settings = TrainSettings(**{
        **vars(args), "attn_implementation": attention, "output_dir": Path(args.output_dir),
        "dataset": Path(args.dataset), "val_dataset": None if args.val_dataset is None else Path(args.val_dataset),
    })
    for prefix, _ in settings.data_entries:
        if not packed_files(settings.dataset, prefix):
            raise UserInputError(f"--dataset {settings.dataset} holds no {prefix}*.bin files (from --data-config)")
    if settings.val_dataset is not None and not packed_files(settings.val_dataset):
        raise UserInputError(f"--val-dataset {settings.val_dataset} holds no *.bin packed files")
    if settings.offload_activations and not (cuda and settings.gradient_checkpointing):
        raise UserInputError("--offload-activations moves checkpointed activations to pinned host memory: it needs "
                             "CUDA and gradient checkpointing")
    if settings.wandb and importlib.util.find_spec("wandb") is None:
        raise UserInputError("--wandb needs the wandb package (pip install wandb)")
    check_output_dir(settings)
    return settings


def check_output_dir(settings: TrainSettings) -> None:
    """An --output-dir holding another run is only used with --resume (continue it) or --overwrite (replace it)."""
    if settings.resume is not None and settings.overwrite:
        raise UserInputError("--resume continues the run in --output-dir and --overwrite replaces it: give one")
    output_dir = settings.output_dir
    if output_dir.is_dir() and any(output_dir.iterdir()) and settings.resume is None and not settings.overwrite:
        shown = ", ".join(sorted(path.name for path in output_dir.iterdir())[:5])
        raise UserInputError(
            f"--output-dir {output_dir} is not empty ({shown}, ...): pass --resume to continue the run there, "
            "--overwrite to replace it, or choose another folder"
        )
    check_writable_folder(output_dir, "--output-dir")
