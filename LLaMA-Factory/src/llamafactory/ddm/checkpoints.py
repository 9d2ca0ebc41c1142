"""Reading and writing the released checkpoint layouts (SPEC 8).

* wrapper layout (DiffuGPT on the Hub): a GPT-2 ``config.json`` and one ``model.safetensors`` whose keys
  are ``embed_tokens.*`` (the tied input/output embedding) and ``denoise_model.*`` (the transformer body
  without it); ``lm_head.weight`` may be absent.
* hf layout (DiffuLLaMA on the Hub, and everything our stages write by default): an ordinary
  transformers causal-LM checkpoint, possibly sharded with ``model.safetensors.index.json``.

Weights are read with safetensors; ``.bin`` files only through ``weights_only=True`` loading.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel

from .errors import DiffusionInputError
from .model import DiffusionLM, make_bidirectional
from .tokens import resolve_special_tokens

logger = logging.getLogger(__name__)

Layout = Literal["wrapper", "hf"]
EMBED_PREFIX = "embed_tokens."
BODY_PREFIX = "denoise_model."
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "tokenizer*"]


def resolve_checkpoint_dir(name_or_path: str | os.PathLike, *, revision: str | None = None) -> Path:
    """A local checkpoint directory: the path itself, or a Hub snapshot downloaded (safetensors only)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise DiffusionInputError(f"{path} is a file; expected a checkpoint directory or a Hub model id")
    name = str(name_or_path)
    if not _HUB_ID.match(name) or name.startswith((".", "/", "~")):
        raise DiffusionInputError(f"checkpoint directory {name} does not exist")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=_HUB_PATTERNS))
    except Exception as error:  # network, auth or not-found errors all mean: cannot use this name
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DiffusionInputError(
            f"{name} is neither a local directory nor a reachable Hub model ({type(error).__name__}: {reason})"
        ) from None


def weight_files(directory: Path) -> list[Path]:
    """The checkpoint's weight files: safetensors (single or sharded) first, else ``.bin``."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = directory / index_name
        if index.exists():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [directory / shard for shard in shards]
    for pattern in ("*.safetensors", "pytorch_model*.bin"):
        found = sorted(p for p in directory.glob(pattern) if "adapter" not in p.name)
        if found:
            return found
    raise DiffusionInputError(f"{directory} holds no model weights (*.safetensors or pytorch_model*.bin)")


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory, loaded safely onto the CPU."""
    state: dict[str, torch.Tensor] = {}
    for file in weight_files(directory):
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as handle:
                state.update({key: handle.get_tensor(key) for key in handle.keys()})
        else:
            state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state


def checkpoint_keys(directory: Path) -> list[str]:
    """Tensor names of a checkpoint without loading the tensors (safetensors), else by loading."""
    keys: list[str] = []
    for file in weight_files(directory):
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as handle:
                keys.extend(handle.keys())
        else:
            keys.extend(torch.load(file, map_location="cpu", weights_only=True).keys())
    return keys


def detect_layout(directory: Path) -> Layout:
    keys = checkpoint_keys(directory)
    return "wrapper" if any(k.startswith((EMBED_PREFIX, BODY_PREFIX)) for k in keys) else "hf"


def _embedding_path(model: PreTrainedModel) -> str:
    """Dotted name of the input embedding inside the base model (``wte`` for GPT-2)."""
    embedding = model.get_input_embeddings()
    for name, module in model.base_model.named_modules():
        if module is embedding:
            return name
    raise DiffusionInputError(f"cannot locate the input embedding of {type(model).__name__}")


def wrapper_to_hf_keys(state: dict[str, torch.Tensor], model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """Rename wrapper-layout keys (``embed_tokens`` / ``denoise_model``) to the model's own names."""
    prefix, embed = model.base_model_prefix, _embedding_path(model)
    renamed = {}
    for key, value in state.items():
        if key.startswith(EMBED_PREFIX):
            renamed[f"{prefix}.{embed}.{key[len(EMBED_PREFIX):]}"] = value
        elif key.startswith(BODY_PREFIX):
            renamed[f"{prefix}.{key[len(BODY_PREFIX):]}"] = value
        else:
            renamed[key] = value
    return renamed


def hf_to_wrapper_keys(
    model: PreTrainedModel, state_dict: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The wrapper-layout state of a tied model: ``embed_tokens.*`` + ``denoise_model.*``, no head."""
    prefix, embed = model.base_model_prefix, _embedding_path(model)
    state = {}
    for key, value in (model.state_dict() if state_dict is None else state_dict).items():
        if not key.startswith(prefix + "."):
            continue
        inner = key[len(prefix) + 1 :]
        if inner.startswith(embed + "."):
            state[EMBED_PREFIX + inner[len(embed) + 1 :]] = value
        else:
            state[BODY_PREFIX + inner] = value
    return state


def _raise_on_mismatch(directory: Path, missing: list[str], unexpected: list[str]) -> None:
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(sorted(missing))}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(sorted(unexpected))}")
    if problems:
        raise DiffusionInputError(f"checkpoint {directory} does not match the model; " + "; ".join(problems))


def load_weights_into(model: PreTrainedModel, directory: Path) -> None:
    """Load a checkpoint of either layout into an existing model, failing on any key mismatch.

    Used for ``checkpoint_dir``: the architecture comes from the base model, the weights from here.
    """
    state = read_state_dict(directory)
    if any(k.startswith((EMBED_PREFIX, BODY_PREFIX)) for k in state):
        state = wrapper_to_hf_keys(state, model)
    rows = next((v.shape[0] for k, v in state.items() if k.endswith(f"{_embedding_path(model)}.weight")), None)
    if rows is not None and rows != model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(rows, mean_resizing=False)
    result = model.load_state_dict(state, strict=False)
    tied = {k for k in result.missing_keys if _is_tied_head(model, k)}
    _raise_on_mismatch(directory, [k for k in result.missing_keys if k not in tied], list(result.unexpected_keys))
    if tied:
        model.tie_weights()


def _is_tied_head(model: PreTrainedModel, key: str) -> bool:
    head = model.get_output_embeddings()
    tied = getattr(model.config, "tie_word_embeddings", False)
    return bool(tied and head is not None and key.endswith("weight") and key.split(".")[0] in {"lm_head"})


def _load_config(directory: Path, base_config: PretrainedConfig | str | None, trust_remote_code: bool) -> PretrainedConfig:
    if (directory / "config.json").exists():
        return AutoConfig.from_pretrained(directory, trust_remote_code=trust_remote_code)
    if isinstance(base_config, PretrainedConfig):
        return base_config
    if base_config:
        return AutoConfig.from_pretrained(resolve_checkpoint_dir(base_config), trust_remote_code=trust_remote_code)
    raise DiffusionInputError(f"{directory} has no config.json; pass the base model name for its configuration")


def load_causal_lm(
    name_or_path: str | os.PathLike,
    *,
    base_config: PretrainedConfig | str | None = None,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = "sdpa",
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """A released or self-trained diffusion checkpoint (either layout) as a bidirectional causal LM."""
    directory = resolve_checkpoint_dir(name_or_path)
    config = _load_config(directory, base_config, trust_remote_code)
    if detect_layout(directory) == "wrapper":
        state = read_state_dict(directory)
        rows = state[EMBED_PREFIX + "weight"].shape[0]
        if rows != config.vocab_size:
            logger.info("embedding has %d rows, config says vocab_size %d: using the embedding", rows, config.vocab_size)
            config.vocab_size = rows
        model = AutoModelForCausalLM.from_config(
            config, dtype=dtype, attn_implementation=attn_implementation, trust_remote_code=trust_remote_code
        )
        result = model.load_state_dict(wrapper_to_hf_keys(state, model), strict=False)
        missing = [k for k in result.missing_keys if not _is_tied_head(model, k)]
        _raise_on_mismatch(directory, missing, list(result.unexpected_keys))
        model.tie_weights()
    else:
        files = weight_files(directory)
        model, info = AutoModelForCausalLM.from_pretrained(
            directory,
            config=config,
            dtype=dtype,
            attn_implementation=attn_implementation,
            use_safetensors=files[0].suffix == ".safetensors",
            trust_remote_code=trust_remote_code,
            output_loading_info=True,
        )
        missing = [k for k in info.get("missing_keys", []) if not _is_tied_head(model, k)]
        _raise_on_mismatch(directory, missing, list(info.get("unexpected_keys", [])))
    return make_bidirectional(model).eval()


def load_tokenizer(directory: str | os.PathLike, *, fallback: str | None = None, trust_remote_code: bool = False) -> Any:
    """The checkpoint's tokenizer, else the base model's (``fallback``)."""
    for source in (directory, fallback):
        if source is None:
            continue
        try:
            return AutoTokenizer.from_pretrained(resolve_checkpoint_dir(source), trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError) as error:
            logger.debug("no tokenizer in %s: %s", source, error)
    raise DiffusionInputError(f"no tokenizer found in {directory}" + (f" nor in {fallback}" if fallback else ""))


def apply_adapters(model: PreTrainedModel, adapters: list[str], *, merge: bool = True) -> PreTrainedModel:
    """Apply PEFT LoRA adapters in order (merged into the weights by default, for inference)."""
    from peft import PeftModel

    for adapter in adapters:
        directory = resolve_checkpoint_dir(adapter)
        if not (directory / "adapter_config.json").exists():
            raise DiffusionInputError(f"{directory} is not a PEFT adapter (no adapter_config.json)")
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        model = PeftModel.from_pretrained(model, directory)
        if merge:
            model = model.merge_and_unload()
            if tied:  # a trained embedding copy replaced the input embedding: the head follows it
                model.config.tie_word_embeddings = True
                model.get_output_embeddings().weight = model.get_input_embeddings().weight
    return model


def load_diffusion_lm(
    name_or_path: str | os.PathLike,
    *,
    base_model: str | PretrainedConfig | None = None,
    tokenizer: Any = None,
    adapters: list[str] | None = None,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = "sdpa",
    device: torch.device | str | None = None,
    shift: bool = True,
    trust_remote_code: bool = False,
) -> tuple[DiffusionLM, Any]:
    """Checkpoint + tokenizer + special tokens -> ``(DiffusionLM, tokenizer)``, ready to sample."""
    directory = resolve_checkpoint_dir(name_or_path)
    fallback = base_model if isinstance(base_model, str) else None
    if tokenizer is None:
        tokenizer = load_tokenizer(directory, fallback=fallback, trust_remote_code=trust_remote_code)
    model = load_causal_lm(
        directory, base_config=base_model, dtype=dtype, attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
    )
    if adapters:
        model = make_bidirectional(apply_adapters(model, adapters))
    tokens = resolve_special_tokens(tokenizer, model.config.model_type, model.get_input_embeddings().weight.shape[0])
    wrapper = DiffusionLM(model, tokens, shift=shift)
    if device is not None:
        wrapper.to(device)
    return wrapper.eval(), tokenizer


def generation_length(config: PretrainedConfig, default: int = 512) -> int:
    """The checkpoint's sampling length (``task_specific_params``), capped by its position table."""
    params = getattr(config, "task_specific_params", None) or {}
    length = int(params.get("text-generation", {}).get("max_length", default))
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return min(length, int(limit)) if limit else length


def _current_umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_default_permissions(path: Path) -> None:
    """Give a staged file or folder (tree) the permissions a plain write would: temp files are owner-only."""
    mask = _current_umask()
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in paths:
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


def _replace_directory(staging: Path, target: Path) -> None:
    """Move a fully written directory into place; an existing target is swapped out, then removed."""
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, backup)
    os.replace(staging, target)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def save_diffusion_checkpoint(
    model: PreTrainedModel,
    directory: str | os.PathLike,
    *,
    layout: Layout = "hf",
    tokenizer: Any = None,
    generation_length: int | None = None,
    max_shard_size: str = "5GB",
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint in a released layout, atomically (staged, then moved into place).

    The config records ``is_causal = False`` and, when given, the sampling length; the wrapper layout
    is for tied models (DiffuGPT) and stores no head. ``state_dict`` replaces the model's own weights
    (e.g. gathered from ZeRO-3 shards onto one process), keyed as ``model.state_dict()``.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        config = model.config
        make_bidirectional(model)
        if generation_length is not None:
            params = dict(getattr(config, "task_specific_params", None) or {})
            params["text-generation"] = {**params.get("text-generation", {}), "do_sample": True,
                                         "max_length": int(generation_length)}
            config.task_specific_params = params
        if layout == "wrapper":
            if not getattr(config, "tie_word_embeddings", False):
                raise DiffusionInputError("the wrapper layout stores no head: it needs a tied model (GPT-2)")
            state = {k: v.detach().cpu().contiguous() for k, v in hf_to_wrapper_keys(model, state_dict).items()}
            save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
            config.save_pretrained(staging)
        else:
            model.save_pretrained(staging, safe_serialization=True, max_shard_size=max_shard_size,
                                  state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        apply_default_permissions(staging)
        _replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
