"""Checks on the files a run reads and writes, done before anything is loaded or written.

``get_train_args`` judges the config alone; these look at the disk (and may resolve Hub ids): the output
folder (not empty without overwrite, writable), dataset files, the model (readable weights, a window that
holds ``cutoff_len``), ``checkpoint_dir``, adapters and ``resume_from_checkpoint`` (a complete checkpoint).
They also refuse combinations of settings that would only fail once training runs (annealing or a block
size with an attention kernel that takes no 4D mask) and a block size that contradicts the model's own.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig
from transformers.integrations import is_deepspeed_zero3_enabled

from ..data import get_template, has_tokenized_data
from ..data.registry import check_datasets
from ..ddm import annealed_steps, check_window, detect_layout, is_adapter_dir
from ..ddm.attention import check_block_kernel, check_block_size
from ..ddm.checkpoints import recorded_adapter_block_size, recorded_block_size
from ..ddm.checkpoints.loading import checked_weight_files
from ..ddm.checkpoints.metadata import ADAPTER_METADATA
from ..errors import UserInputError
from ..hparams import DataArguments, FinetuningArguments, ModelArguments, TrainingArguments
from ..utils.files import check_writable_folder
from ..utils.hub import resolve_checkpoint_dir
from .checkpoints import resume_checkpoint


def check_output_dir(training_args: TrainingArguments, resuming: bool) -> None:
    """A non-empty ``output_dir`` is only written into when the config says so."""
    output = Path(training_args.output_dir)
    if training_args.overwrite_output_dir or resuming or not output.is_dir():
        return
    entries = sorted(p.name for p in output.iterdir())
    if entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise UserInputError(
            f"output_dir {output} is not empty ({shown}); set overwrite_output_dir: true to write into it, "
            "resume_from_checkpoint to continue a run, or choose another output_dir"
        )


def check_annealing(model_args: ModelArguments, training_args: TrainingArguments,
                    finetuning_args: FinetuningArguments) -> None:
    """A diffusion stage that anneals passes a 4D attention mask, which flash_attention_2 cannot take."""
    steps = annealed_steps(finetuning_args.anneal_steps)
    if not (finetuning_args.is_diffusion and training_args.do_train and steps):
        return
    if model_args.attn_implementation == "flash_attention_2":
        raise UserInputError(
            f"anneal_steps {finetuning_args.anneal_steps} trains {steps} steps of stage {finetuning_args.stage} "
            "with a partly causal 4D attention mask, which flash_attention_2 cannot take: use flash_attn: sdpa "
            "(or eager), or anneal_steps: 1 (no annealing)"
        )


def check_run_inputs(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments,
                     finetuning_args: FinetuningArguments) -> None:
    check_annealing(model_args, training_args, finetuning_args)
    resume = resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    check_output_dir(training_args, resuming=resume is not None)
    check_writable_folder(training_args.output_dir, "output_dir")
    get_template(data_args.template)
    if not has_tokenized_data(data_args.tokenized_path):
        names = data_args.dataset_names + data_args.eval_dataset_names
        check_datasets(names, data_args.dataset_dir, finetuning_args.stage)
    base = resolve_checkpoint_dir(model_args.model_name_or_path, revision=model_args.model_revision)
    checked_weight_files(base)
    if model_args.checkpoint_dir:
        checked_weight_files(resolve_checkpoint_dir(model_args.checkpoint_dir))
    for adapter in model_args.adapters:
        resolve_checkpoint_dir(adapter)
    check_sequence_length(base, data_args, model_args)
    check_block_diffusion(base, model_args, training_args, finetuning_args)
    check_zero3_loading(model_args, base, training_args)


def check_sequence_length(base: Path, data_args: DataArguments, model_args: ModelArguments) -> None:
    """``cutoff_len`` must fit the model's position window (checked now, not when step N overflows it)."""
    if (base / "config.json").is_file():
        config = AutoConfig.from_pretrained(base, trust_remote_code=model_args.trust_remote_code)
        check_window(config, data_args.cutoff_len, f"cutoff_len {data_args.cutoff_len}")


def check_block_diffusion(base: Path, model_args: ModelArguments, training_args: TrainingArguments,
                          finetuning_args: FinetuningArguments) -> None:
    """``block_size``: an integer >= 1 for a diffusion stage, a kernel that takes the block-causal mask, and
    agreement with the block size the model's config records (docs/design.md#block-diffusion).

    Adapting a full-sequence diffusion model or an AR model into a block model (``do_train``) is the point of
    the key; a block model keeps its block size, and a full-sequence model is not evaluated as a block model,
    unless ``allow_block_size_change`` says so.
    """
    block_size = check_block_size(finetuning_args.block_size)
    if not finetuning_args.is_diffusion:
        if block_size is not None:
            raise UserInputError(f"block_size {block_size} applies to the diffusion stages ddm and ddm-sft, "
                                 f"not stage {finetuning_args.stage}: remove it")
        return
    source = base  # the weights trained: checkpoint_dir's, unless it is an adapter over the base model
    adapters = [resolve_checkpoint_dir(name) for name in model_args.adapters]
    if model_args.checkpoint_dir:
        checkpoint = resolve_checkpoint_dir(model_args.checkpoint_dir)
        if is_adapter_dir(checkpoint):
            adapters.insert(0, checkpoint)
        else:
            source = checkpoint
    config = None
    if (source / "config.json").is_file():
        config = AutoConfig.from_pretrained(source, trust_remote_code=model_args.trust_remote_code)
    if block_size is not None:
        check_block_kernel(model_args.attn_implementation, config.model_type if config else "this model")
    recorded, where = (recorded_block_size(config) if config is not None else None), "its config.json"
    for adapter in adapters:  # applied in order: the last adapter that records a block size decides
        if (adapter_block := recorded_adapter_block_size(adapter)) is not None:
            recorded, source, where = adapter_block, adapter, f"its {ADAPTER_METADATA}"
    if finetuning_args.allow_block_size_change or recorded == block_size:
        return
    if recorded is not None:
        raise UserInputError(
            f"{source} is a block-diffusion model ({where} records block_size {recorded}) but the run "
            f"sets block_size {block_size}: set block_size: {recorded}, or allow_block_size_change: true to "
            "train it with another block size"
        )
    if not training_args.do_train:
        raise UserInputError(
            f"{source} is a full-sequence diffusion model (its config.json records no block_size), so evaluating "
            f"or predicting with block_size {block_size} uses attention it was never trained with: train it with "
            "block_size (do_train: true) first, remove block_size, or set allow_block_size_change: true"
        )


def check_zero3_loading(model_args: ModelArguments, base: Path, training_args: TrainingArguments) -> None:
    """Diffusion weights are copied into a built model as whole tensors; ZeRO-3 partitions it while building."""
    if not is_deepspeed_zero3_enabled():
        return
    if model_args.checkpoint_dir:
        source = f"checkpoint_dir {model_args.checkpoint_dir}"
    elif detect_layout(base) == "wrapper":
        source = f"model_name_or_path {model_args.model_name_or_path} (DiffuGPT wrapper layout)"
    else:
        return
    raise UserInputError(
        f"{source} cannot be loaded under DeepSpeed ZeRO-3 (deepspeed: {training_args.deepspeed}); use ZeRO-2 "
        "(examples/deepspeed/ds_z2_config.json), or give a checkpoint saved in the hf layout as model_name_or_path"
    )
