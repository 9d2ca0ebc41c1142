"""Convert any checkpoint the core loads into the Hugging Face-native format (docs/design.md#hf-native-format).

The released wrapper and HF layouts, the stages' outputs, LoRA adapters (merged) and earlier exports all
load through ``load_diffusion_lm``; the result is written as a ``diffugpt`` / ``diffullama`` model:
safetensors shards, config.json with the special token ids, generation_config.json with the sampler's
defaults, the tokenizer and a model card; with ``self_contained`` also the modeling code and ``auto_map``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from ... import __version__
from ...errors import UserInputError
from ...utils.files import check_writable_folder, staged_directory
from ...utils.hub import resolve_checkpoint_dir
from ..cache import CACHE_MODES
from ..checkpoints import check_window, load_diffusion_lm, record_generation_length
from ..model import DiffusionLM
from ..strategies import STRATEGIES
from . import FAMILIES
from .generation_diffusion import DiffusionGenerationConfig
from .standalone import auto_map, write_modeling_code

DESCRIPTION = ("A masked (absorbing-state) diffusion language model adapted from an autoregressive one, as in "
               '"Scaling Diffusion Language Models via Adaptation from Autoregressive Models" (Gong et al., ICLR 2025).')
# Config keys that name the class or the code, not the model; the exported config sets its own.
_CLASS_KEYS = ("model_type", "architectures", "auto_map", "transformers_version")

MODEL_CARD = """---
library_name: transformers
tags:
- diffusion-language-model
- {model_type}
---

# {name}

{description}

Exported by `llamafactory-cli export` ({package} {version}): a Hugging Face-native `{model_type}` model
(weights named as transformers' `{base_type}` ones).

```python
{snippet}
```

`generate` / `diffusion_generate` run the diffusion sampler, not left-to-right decoding. Their defaults
are in `generation_config.json` ({defaults}); each can be passed as a keyword, e.g. `steps`,
`block_length`, `strategy` ({strategies}), `cache` ({caches}), `temperature`, `top_p`, `generator`.
"""


def load_snippet(path: str, self_contained: bool) -> str:
    """The six lines that load an exported folder, tokenize a left-padded batch, generate and decode."""
    if self_contained:
        first, prefix, remote = "from transformers import AutoModel, AutoTokenizer", "", ", trust_remote_code=True"
    else:
        first = "import llamafactory, transformers  # llamafactory registers diffugpt / diffullama with the Auto classes"
        prefix, remote = "transformers.", ""
    return "\n".join([
        first,
        f'tokenizer = {prefix}AutoTokenizer.from_pretrained("{path}", padding_side="left"{remote})',
        f'model = {prefix}AutoModel.from_pretrained("{path}"{remote})',
        'batch = tokenizer(["The quick brown fox", "Once upon a time, there"], return_tensors="pt", padding=True)',
        "output = model.diffusion_generate(**batch, max_new_tokens=32, steps=32)",
        "print(tokenizer.batch_decode(output, skip_special_tokens=True))",
    ])


def model_card(native: PreTrainedModel, name: str, description: str, path: str, self_contained: bool) -> str:
    """README.md of an export: what the model is, the load-and-generate snippet, the sampler's defaults."""
    defaults = native.generation_config
    return MODEL_CARD.format(
        name=name, description=description, model_type=native.config.model_type,
        base_type=_family(native.config.model_type)[0], package=__package__.split(".")[0], version=__version__,
        snippet=load_snippet(path, self_contained), strategies=", ".join(STRATEGIES), caches=", ".join(CACHE_MODES),
        defaults=f"steps={defaults.steps}, temperature={defaults.temperature}, top_p={defaults.top_p}, "
                 f"strategy={defaults.strategy!r}",
    )


def _family(model_type: str) -> tuple[str, type, type]:
    """``(AR model type, config class, model class)`` of an AR or an exported model type."""
    for base_type, (config_class, model_class) in FAMILIES.items():
        if model_type in (base_type, config_class.model_type):
            return base_type, config_class, model_class
    raise UserInputError(f"cannot export a {model_type} model: the Hugging Face-native format covers "
                         f"{', '.join(FAMILIES)} (DiffuGPT, DiffuLLaMA)")


def native_model(model: DiffusionLM) -> PreTrainedModel:
    """The same weights (shared, not copied) as a ``DiffuGPTForMaskedLM`` / ``DiffuLLaMAForMaskedLM`` whose
    config records the special tokens, the shift convention and the block size."""
    causal = model.causal_lm()
    _, config_class, model_class = _family(causal.config.model_type)
    tokens = model.tokens
    settings = {key: value for key, value in causal.config.to_dict().items() if key not in _CLASS_KEYS}
    settings.update(mask_token_id=tokens.mask_id, pad_token_id=tokens.pad_id, sep_token_id=tokens.sep_id,
                    shift=model.shift, is_causal=False, block_size=model.block_size)
    settings.update({key: value for key, value in (("bos_token_id", tokens.bos_id), ("eos_token_id", tokens.eos_id))
                     if value is not None})
    config = config_class.from_dict(settings)
    with torch.device("meta"):
        native = model_class(config)
    native.load_state_dict(causal.state_dict(), strict=True, assign=True)
    for name, buffer in causal.named_buffers():  # non-persistent buffers (rotary frequencies) are not in the state
        owner, _, attribute = name.rpartition(".")
        native.get_submodule(owner).register_buffer(attribute, buffer, persistent=name in causal.state_dict())
    native.tie_weights()
    source_defaults = causal.generation_config
    native.generation_config = DiffusionGenerationConfig() if source_defaults is None else \
        DiffusionGenerationConfig.adopt(source_defaults)
    native.generation_config.update(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                                    pad_token_id=config.pad_token_id)
    return native.eval()


def _give_pad_token(tokenizer: Any, native: PreTrainedModel) -> None:
    """A tokenizer without a pad token pads with EOS when the model knows no pad id (as every loader does), so
    that ``tokenizer(..., padding=True)`` works; the ids themselves are recorded in config.json."""
    if tokenizer.pad_token is None and native.config.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token


def check_export_target(directory: Path, *, source: Path, overwrite: bool) -> None:
    """Refuse, before any work, a target that holds something (unless ``overwrite``) or is the source itself."""
    if directory.exists() and not directory.is_dir():
        raise UserInputError(f"export_dir {directory} is a file; name a folder")
    if directory.exists() and directory.resolve() == source.resolve():
        raise UserInputError(f"export_dir {directory} is the source checkpoint; export into another folder")
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise UserInputError(f"export_dir {directory} is not empty; pass --overwrite to replace it")
    check_writable_folder(directory, "export_dir")


def export_native(
    source: str | os.PathLike,
    export_dir: str | os.PathLike,
    *,
    base_model: str | None = None,
    adapters: list[str] | None = None,
    self_contained: bool = False,
    overwrite: bool = False,
    dtype: torch.dtype | None = None,
    max_shard_size: str = "5GB",
    generation_length: int | None = None,
    description: str = DESCRIPTION,
    card_path: str | None = None,
) -> Path:
    """Write ``source`` (any checkpoint ``load_diffusion_lm`` reads, ``adapters`` merged) to ``export_dir`` in
    the Hugging Face-native format; the folder appears whole or not at all.

    ``generation_length`` replaces the recorded sampling length; ``description`` opens the model card, whose
    snippet loads the folder from ``card_path`` (default: its name).
    """
    directory = Path(export_dir)
    source_dir = resolve_checkpoint_dir(source)
    check_export_target(directory, source=source_dir, overwrite=overwrite)
    model, tokenizer = load_diffusion_lm(source_dir, base_model=base_model, adapters=adapters, dtype=dtype)
    native = native_model(model)
    if generation_length is not None:
        if generation_length < 1:
            raise UserInputError(f"the generation length must be >= 1, got {generation_length}")
        check_window(native.config, generation_length, f"generation length {generation_length}")
        record_generation_length(native.config, generation_length)
    _give_pad_token(tokenizer, native)
    if self_contained:
        native.config.auto_map = auto_map(type(native.config), type(native))
    card = model_card(native, directory.name, description, card_path or directory.name, self_contained)
    with staged_directory(directory) as staging:
        native.save_pretrained(staging, safe_serialization=True, max_shard_size=max_shard_size)
        tokenizer.save_pretrained(staging)
        if self_contained:
            write_modeling_code(staging)
        (staging / "README.md").write_text(card, encoding="utf-8")
    return directory
