"""Turn a config (dict, YAML/JSON file, ``key=value`` overrides) into the five argument objects.

Everything that can be decided from the config alone is decided here, before any model or data is
touched: unknown keys (named, with a suggestion), keys transformers 5 removed (mapped), stage defaults
(``anneal_steps``, ``packing``, the original's GSM8K decoding) and contradictions.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import logging
import sys
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any, Union

import torch
import yaml

from ..ddm.noise import annealed_steps
from ..entry_points import bool_word
from ..errors import UserInputError
from .data_args import DataArguments
from .finetuning_args import DEFAULT_ANNEAL_STEPS, FINETUNING_TYPES, STAGES, FinetuningArguments
from .generating_args import GeneratingArguments
from .model_args import ATTENTION_CHOICES, ModelArguments
from .training_args import TrainingArguments

logger = logging.getLogger(__name__)

ArgumentClasses = (ModelArguments, DataArguments, TrainingArguments, FinetuningArguments, GeneratingArguments)
TrainArgs = tuple[ModelArguments, DataArguments, TrainingArguments, FinetuningArguments, GeneratingArguments]

# Keys of older transformers / LLaMA-Factory versions -> their current names.
RENAMED_KEYS = {
    "evaluation_strategy": "eval_strategy",
    "no_cuda": "use_cpu",
    "per_gpu_train_batch_size": "per_device_train_batch_size",
    "per_gpu_eval_batch_size": "per_device_eval_batch_size",
}
# LLaMA-Factory root: relative deepspeed paths of the examples resolve from here too.
PROJECT_ROOT = Path(__file__).resolve().parents[3]


def read_args(args: dict[str, Any] | list[str] | None = None) -> dict[str, Any]:
    """A config as a flat dict: ``args`` itself, or ``[CONFIG.yaml|json] [key=value | --key value ...]``."""
    if isinstance(args, dict):
        return dict(args)
    argv = list(sys.argv[1:] if args is None else args)
    config: dict[str, Any] = {}
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        config = load_config_file(Path(argv.pop(0)))
    config.update(parse_overrides(argv))
    return config


def load_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserInputError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        config = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise UserInputError(f"cannot parse {path}: {str(error).splitlines()[0]}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise UserInputError(f"{path} must hold a mapping of keys to values, got {type(config).__name__}")
    return config


def parse_overrides(argv: list[str]) -> dict[str, str]:
    """``key=value``, ``--key=value`` and ``--key value`` items; values stay strings (typed later)."""
    overrides: dict[str, str] = {}
    items = iter(argv)
    for item in items:
        if item.startswith("--"):
            key, sep, value = item[2:].partition("=")
            if not sep:
                value = next(items, "true")
        else:
            key, sep, value = item.partition("=")
            if not sep:
                raise UserInputError(f"cannot read command-line item '{item}'; expected key=value")
        overrides[key] = value
    return overrides


def _rename_legacy_keys(config: dict[str, Any]) -> dict[str, Any]:
    config = dict(config)
    for old, new in RENAMED_KEYS.items():
        if old not in config:
            continue
        value = config.pop(old)
        if new in config and config[new] != value:
            raise UserInputError(f"'{old}' (old name of '{new}') is {value!r} but '{new}' is {config[new]!r}")
        config.setdefault(new, value)
        logger.info("config key '%s' is now '%s'", old, new)
    return config


def _known_fields() -> dict[str, tuple[type, Any]]:
    """Field name -> (argument class, resolved type annotation), over all five classes."""
    known: dict[str, tuple[type, Any]] = {}
    for cls in ArgumentClasses:
        hints = typing.get_type_hints(cls)
        for item in fields(cls):
            if item.init:
                known[item.name] = (cls, hints[item.name])
    return known


def _reject_unknown_keys(config: dict[str, Any], known: dict[str, tuple[type, Any]]) -> None:
    unknown = [key for key in config if key not in known]
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, list(known), n=1)
        hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    raise UserInputError(f"unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}")


def _member_types(annotation: Any) -> set[Any]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return set().union(*(_member_types(arg) for arg in typing.get_args(annotation)))
    return {typing.get_origin(annotation) or annotation}


def coerce_value(key: str, value: Any, annotation: Any) -> Any:
    """Give a command-line string (or a YAML scalar) the type its field declares."""
    kinds = _member_types(annotation)
    if isinstance(value, float) and int in kinds and float not in kinds and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and float in kinds and int not in kinds:
        return float(value)
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if type(None) in kinds and (text in ("null", "~") or (str not in kinds and text in ("none", ""))):
        return None
    if bool in kinds and (text in ("true", "false") or (str not in kinds and bool_word(text) is not None)):
        return bool_word(text)
    for number in (int, float):
        if number in kinds:
            try:
                return number(value)
            except ValueError:
                continue
    if kinds & {str, dict, list} or any(isinstance(kind, type) and issubclass(kind, str) for kind in kinds):
        return value
    raise UserInputError(f"{key} must be {annotation}, got {value!r}")


def _has_accelerator() -> bool:
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


def _resolve_deepspeed_path(config: dict[str, Any]) -> None:
    """Let ``examples/deepspeed/...`` work from any directory, not only from LLaMA-Factory/."""
    path = config.get("deepspeed")
    if isinstance(path, str) and not Path(path).exists() and (PROJECT_ROOT / path).is_file():
        config["deepspeed"] = str(PROJECT_ROOT / path)
    elif isinstance(path, str) and not Path(path).is_file():
        raise UserInputError(f"deepspeed config {path} does not exist")


def _build(config: dict[str, Any], known: dict[str, tuple[type, Any]]) -> TrainArgs:
    grouped: dict[type, dict[str, Any]] = {cls: {} for cls in ArgumentClasses}
    for key, value in config.items():
        cls, annotation = known[key]
        grouped[cls][key] = coerce_value(key, value, annotation)
    built = []
    for cls in ArgumentClasses:
        try:
            built.append(cls(**grouped[cls]))
        except (ValueError, TypeError) as error:
            message = " ".join(str(error).split())
            raise UserInputError(f"invalid {cls.__name__}: {message}") from None
    return tuple(built)  # type: ignore[return-value]


def get_train_args(args: dict[str, Any] | list[str] | None = None) -> TrainArgs:
    """Parse and validate a training config; returns ``(model, data, training, finetuning, generating)``.

    ``args`` is a dict of keys, a command line (``[CONFIG] key=value ...``), or None for ``sys.argv``.
    Raises UserInputError (one line) for unknown keys, bad values and contradictions.
    """
    config = _rename_legacy_keys(read_args(args))
    known = _known_fields()
    _reject_unknown_keys(config, known)
    if "deepspeed" in config:
        _resolve_deepspeed_path(config)
    if not _has_accelerator() and "use_cpu" not in config:
        config["use_cpu"] = True  # no GPU here: mixed-precision and multi-process runs then use the CPU path
    model_args, data_args, training_args, finetuning_args, generating_args = _build(config, known)
    _apply_stage_defaults(data_args, training_args, finetuning_args)
    _apply_decoding_defaults(set(config), data_args, finetuning_args, generating_args)
    validate_args(model_args, data_args, training_args, finetuning_args, generating_args)
    return model_args, data_args, training_args, finetuning_args, generating_args


def _apply_stage_defaults(data_args: DataArguments, training_args: TrainingArguments,
                          finetuning_args: FinetuningArguments) -> None:
    stage = finetuning_args.stage
    if finetuning_args.anneal_steps is None:
        finetuning_args.anneal_steps = DEFAULT_ANNEAL_STEPS.get(stage, 1)
    if data_args.packing is None:
        data_args.packing = stage in ("pt", "ddm")
    elif data_args.packing and stage in ("sft", "ddm-sft"):
        logger.warning("packing applies to pt and ddm only; ignored for %s", stage)
        data_args.packing = False
    # Our collators pick their columns themselves (src_mask is no model input).
    training_args.remove_unused_columns = False
    if training_args.ddp_find_unused_parameters is None:
        training_args.ddp_find_unused_parameters = False


def _apply_decoding_defaults(given: set[str], data_args: DataArguments, finetuning_args: FinetuningArguments,
                             generating_args: GeneratingArguments) -> None:
    """Keys the config leaves out resolve as the original predict path did (docs/design.md#sampling).

    A first eval dataset whose name contains "gsm" switched the original to its top-k sampler with argmax
    tokens; that sampler, like the ``topk`` rule here, had no nucleus filter, so ``topp_temp`` is off
    whenever ``topk`` is not paired with an explicit ``topp_temp``.
    """
    if not finetuning_args.is_diffusion:
        return
    if "shift" not in given:
        logger.warning("shift is not set: false, the original's default (the released models use shift: true)")
    if "score_temp" in given:
        logger.info("score_temp has no effect (the original declared it but never read it)")
    names = data_args.eval_dataset_names
    if names and "gsm" in names[0]:
        for key, value in (("decoding_strategy", "topk"), ("greedy", True)):
            if key not in given:
                setattr(generating_args, key, value)
    if generating_args.decoding_strategy == "topk" and "topp_temp" not in given:
        generating_args.topp_temp = None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UserInputError(message)


def _require_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    _require(value in choices, f"unknown {key} '{value}'; expected one of {', '.join(choices)}")


def _require_at_least(key: str, value: float, minimum: float) -> None:
    _require(value >= minimum, f"{key} must be >= {minimum}, got {value}")


def validate_args(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments,
                  finetuning_args: FinetuningArguments, generating_args: GeneratingArguments) -> None:
    """Reject settings that cannot work together, from the config alone (files are checked by the preflight)."""
    stage = finetuning_args.stage
    _require(model_args.model_name_or_path is not None, "model_name_or_path is required")
    _require_choice("stage", stage, STAGES)
    _require_choice("finetuning_type", finetuning_args.finetuning_type, FINETUNING_TYPES)
    _require_choice("flash_attn", model_args.flash_attn, ATTENTION_CHOICES)
    _require(training_args.do_train or training_args.do_eval or training_args.do_predict,
             "nothing to do: set do_train, do_eval or do_predict")
    _require(not (stage == "pt" and training_args.do_predict), "do_predict is not available for stage pt")
    _require_at_least("cutoff_len", data_args.cutoff_len, 4)
    annealed_steps(finetuning_args.anneal_steps)  # refuses a negative count
    generating_args.sampling_config(finetuning_args.diffusion_steps, finetuning_args.shift).validate()
    _validate_attention(model_args)
    _validate_finetuning(model_args, finetuning_args)
    _validate_data(data_args, training_args)
    _validate_reporting(training_args)


def _validate_reporting(training_args: TrainingArguments) -> None:
    """``report_to`` integrations need their packages; say which one is missing before loading anything."""
    targets = training_args.report_to or []
    for target, packages in (("wandb", ("wandb",)), ("tensorboard", ("tensorboard", "tensorboardX"))):
        if target in targets:
            _require(any(importlib.util.find_spec(p) is not None for p in packages),
                     f"report_to: {target} needs the {packages[0]} package (pip install {packages[0]})")


def _validate_attention(model_args: ModelArguments) -> None:
    if model_args.flash_attn != "flash_attention_2":
        return
    from transformers.utils import is_flash_attn_2_available

    _require(is_flash_attn_2_available(), "flash_attention_2 needs the flash-attn package and a CUDA GPU")


def _validate_finetuning(model_args: ModelArguments, finetuning_args: FinetuningArguments) -> None:
    lora = finetuning_args.finetuning_type == "lora"
    _require(lora or not model_args.adapters,
             f"adapter_name_or_path needs finetuning_type: lora (got {finetuning_args.finetuning_type})")
    if lora:
        _require_at_least("lora_rank", finetuning_args.lora_rank, 1)
        _require(bool(finetuning_args.lora_targets), "lora_target is empty; use all or module names")


def _validate_data(data_args: DataArguments, training_args: TrainingArguments) -> None:
    _require(not training_args.do_train or bool(data_args.dataset_names), "do_train needs a dataset")
    val_size = data_args.val_size
    _require_at_least("val_size", val_size, 0)
    _require(val_size < 1 or float(val_size).is_integer(), f"val_size >= 1 is a record count; got {val_size}")
    _require(not (data_args.streaming and 0 < val_size < 1), "streaming needs val_size as a record count")
    _require(not (data_args.streaming and data_args.tokenized_path), "tokenized_path cannot be used with streaming")
    _require(not (data_args.streaming and training_args.do_predict), "do_predict needs a non-streaming dataset")
    _require(not (data_args.streaming and training_args.do_train and training_args.max_steps <= 0),
             "streaming data has no length: set max_steps")
    has_eval_data = val_size > 0 or bool(data_args.eval_dataset_names)
    needs_eval_data = training_args.do_eval or training_args.do_predict or training_args.eval_strategy != "no"
    _require(has_eval_data or not needs_eval_data,
             "evaluation/prediction needs data: set val_size or eval_dataset")
