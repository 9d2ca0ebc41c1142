"""Released or self-trained diffusion checkpoints (either layout) into a bidirectional causal LM.

Every key mismatch is an error that lists the missing and unexpected keys; only a tied output head may
be absent (it is the input embedding). Weight files are opened (headers only) before any model is built,
so a corrupt or truncated file, or a config whose vocabulary disagrees with the weights, is one error line.
A tokenizer that cannot encode text (transformers builds an empty one for a folder without tokenizer
files) counts as missing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel

from ...errors import UserInputError
from ...utils.hub import resolve_checkpoint_dir
from ..model import DiffusionLM, make_bidirectional
from ..tokens import SpecialTokens, resolve_special_tokens
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
from .metadata import recorded_block_size, recorded_mask_id

# Encoded to check that a tokenizer really tokenizes: any working vocabulary gives several distinct ids.
_PROBE_TEXT = "The quick brown fox jumps over the lazy dog; 0123456789."
_EMBEDDING_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight")

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


def checked_weight_files(directory: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of a checkpoint's weight files, read from their headers; a damaged file is an error."""
    try:
        files = weight_files(directory)
    except (ValueError, KeyError, OSError) as error:  # an unreadable shard index
        raise UserInputError(f"{directory}: the weight index cannot be read ({error})") from None
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        if not file.is_file():
            raise UserInputError(f"{directory}: weight file {file.name} named by the index is missing")
        if file.suffix != ".safetensors":
            continue
        try:
            with safe_open(str(file), framework="pt") as handle:
                shapes.update({key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()})
        except (SafetensorError, OSError) as error:
            raise UserInputError(
                f"{file} is not a readable safetensors file ({error}); it is truncated or corrupt: "
                "download or save it again"
            ) from None
    return shapes


def _check_vocabulary(directory: Path, config: PretrainedConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """An hf-layout embedding must have the ``vocab_size`` rows its config.json declares."""
    rows = next((shape[0] for key, shape in shapes.items() if key.endswith(_EMBEDDING_SUFFIXES)), None)
    vocab = getattr(config, "vocab_size", None)
    if rows is not None and vocab is not None and rows != vocab:
        raise UserInputError(
            f"{directory}: config.json says vocab_size {vocab} but the weights' embedding has {rows} rows; "
            "the config does not belong to these weights (set vocab_size to the embedding's row count)"
        )


def load_weights_into(model: PreTrainedModel, directory: Path) -> None:
    """Load a checkpoint of either layout into an existing model, failing on any key mismatch.

    Used for ``checkpoint_dir``: the architecture comes from the base model, the weights from here.
    """
    checked_weight_files(directory)
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
    shapes = checked_weight_files(directory)
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
        _check_vocabulary(directory, config, shapes)
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


def tokenizer_problem(tokenizer: Any) -> str | None:
    """Why ``tokenizer`` cannot encode text (an empty vocabulary, everything one id), or None when it can."""
    size = len(tokenizer)
    if size < 2:
        return f"its vocabulary has {size} token(s)"
    ids = tokenizer(_PROBE_TEXT, add_special_tokens=False)["input_ids"]
    if len(set(ids)) < 2:
        return f"it encodes a test sentence as {ids[:6]}, not as several distinct ids"
    return None


def load_tokenizer(directory: str | os.PathLike, *, fallback: str | None = None, trust_remote_code: bool = False) -> Any:
    """The checkpoint's tokenizer, else the base model's (``fallback``); one that cannot encode text is refused."""
    reasons = []
    for source in (directory, fallback):
        if source is None:
            continue
        try:
            tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint_dir(source), trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError) as error:
            logger.debug("no tokenizer in %s: %s", source, error)
            reasons.append(f"{source} has no tokenizer files")
            continue
        problem = tokenizer_problem(tokenizer)
        if problem is None:
            return tokenizer
        reasons.append(f"the tokenizer of {source} cannot encode text ({problem}: are its tokenizer files missing?)")
    raise UserInputError(f"no usable tokenizer: {'; '.join(reasons)}")


def checkpoint_special_tokens(tokenizer: Any, config: PretrainedConfig, vocab_rows: int) -> SpecialTokens:
    """A checkpoint's special token ids: its tokenizer's, the mask id its config records, else the table of
    released models (docs/design.md#special-tokens); one rule for every loader."""
    return resolve_special_tokens(tokenizer, config.model_type, vocab_rows, config=config,
                                  recorded_mask_id=recorded_mask_id(config))


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
    """Checkpoint + tokenizer + special tokens -> ``(DiffusionLM, tokenizer)``, ready to sample; a recorded
    ``block_size`` makes its attention block-causal (docs/design.md#block-diffusion)."""
    directory = resolve_checkpoint_dir(name_or_path)
    fallback = base_model if isinstance(base_model, str) else None
    if tokenizer is None:
        try:
            tokenizer = load_tokenizer(directory, fallback=fallback, trust_remote_code=trust_remote_code)
        except UserInputError as error:
            raise UserInputError(
                f"{error}. The weights load without a tokenizer, but text in and out needs one: copy the base "
                "model's tokenizer files into the checkpoint, or name the base model whose tokenizer it uses"
            ) from None
    model = load_causal_lm(
        directory, base_config=base_model, dtype=dtype, attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
    )
    if adapters:
        model = make_bidirectional(apply_adapters(model, adapters))
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise UserInputError(
            f"the tokenizer has {len(tokenizer)} ids but the model {name_or_path} has {rows} embedding rows: "
            "they do not belong together (use the tokenizer the model was trained with)"
        )
    tokens = checkpoint_special_tokens(tokenizer, model.config, rows)
    wrapper = DiffusionLM(model, tokens, shift=shift, block_size=recorded_block_size(model.config))
    if device is not None:
        wrapper.to(device)
    return wrapper.eval(), tokenizer
