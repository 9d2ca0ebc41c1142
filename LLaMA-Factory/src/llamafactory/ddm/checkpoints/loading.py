"""Released or self-trained diffusion checkpoints (either layout) into a bidirectional causal LM.

Every key mismatch is an error that lists the missing and unexpected keys; only a tied output head may
be absent (it is the input embedding).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel

from ...errors import UserInputError
from ...utils.hub import resolve_checkpoint_dir
from ..model import DiffusionLM, make_bidirectional
from ..tokens import resolve_special_tokens
from .adapters import apply_adapters
from .layouts import (
    EMBED_PREFIX,
    detect_layout,
    embedding_path,
    is_wrapper_key,
    read_state_dict,
    weight_files,
    wrapper_to_hf_keys,
)

logger = logging.getLogger(__name__)


def _raise_on_mismatch(directory: Path, missing: list[str], unexpected: list[str]) -> None:
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(sorted(missing))}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(sorted(unexpected))}")
    if problems:
        raise UserInputError(f"checkpoint {directory} does not match the model; " + "; ".join(problems))


def _is_tied_head(model: PreTrainedModel, key: str) -> bool:
    head = model.get_output_embeddings()
    tied = getattr(model.config, "tie_word_embeddings", False)
    return bool(tied and head is not None and key.endswith("weight") and key.split(".")[0] in {"lm_head"})


def load_weights_into(model: PreTrainedModel, directory: Path) -> None:
    """Load a checkpoint of either layout into an existing model, failing on any key mismatch.

    Used for ``checkpoint_dir``: the architecture comes from the base model, the weights from here.
    """
    state = read_state_dict(directory)
    if any(is_wrapper_key(k) for k in state):
        state = wrapper_to_hf_keys(state, model)
    rows = next((v.shape[0] for k, v in state.items() if k.endswith(f"{embedding_path(model)}.weight")), None)
    if rows is not None and rows != model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(rows, mean_resizing=False)
    result = model.load_state_dict(state, strict=False)
    tied = {k for k in result.missing_keys if _is_tied_head(model, k)}
    _raise_on_mismatch(directory, [k for k in result.missing_keys if k not in tied], list(result.unexpected_keys))
    if tied:
        model.tie_weights()


def _load_config(directory: Path, base_config: PretrainedConfig | str | None, trust_remote_code: bool) -> PretrainedConfig:
    if (directory / "config.json").exists():
        return AutoConfig.from_pretrained(directory, trust_remote_code=trust_remote_code)
    if isinstance(base_config, PretrainedConfig):
        return base_config
    if base_config:
        return AutoConfig.from_pretrained(resolve_checkpoint_dir(base_config), trust_remote_code=trust_remote_code)
    raise UserInputError(f"{directory} has no config.json; pass the base model name for its configuration")


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
    raise UserInputError(f"no tokenizer found in {directory}" + (f" nor in {fallback}" if fallback else ""))


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
    tokens = resolve_special_tokens(tokenizer, model.config.model_type, model.get_input_embeddings().weight.shape[0],
                                    config=model.config)
    wrapper = DiffusionLM(model, tokens, shift=shift)
    if device is not None:
        wrapper.to(device)
    return wrapper.eval(), tokenizer
