"""What a diffusion checkpoint's ``config.json`` records beyond its AR model: the sampling length.

The released checkpoints keep it where transformers keeps task defaults,
``task_specific_params["text-generation"]["max_length"]`` (512 DiffuGPT-S, 1024 DiffuGPT-M, 2048 DiffuLLaMA).
"""

from __future__ import annotations

from transformers import PretrainedConfig


def generation_length(config: PretrainedConfig, default: int = 512) -> int:
    """The checkpoint's sampling length, capped by its position table."""
    params = getattr(config, "task_specific_params", None) or {}
    length = int(params.get("text-generation", {}).get("max_length", default))
    limit = position_limit(config)
    return min(length, limit) if limit else length


def position_limit(config: PretrainedConfig) -> int | None:
    """The longest sequence the model's position table covers, when the config says."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if value:
            return int(value)
    return None


def record_generation_length(config: PretrainedConfig, length: int) -> None:
    """Store the sampling length where ``generation_length`` (and the original loaders) read it."""
    params = dict(getattr(config, "task_specific_params", None) or {})
    params["text-generation"] = {**params.get("text-generation", {}), "do_sample": True, "max_length": int(length)}
    config.task_specific_params = params
