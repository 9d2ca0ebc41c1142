"""The sampler's defaults as a transformers ``GenerationConfig`` (docs/design.md#hf-native-format).

``generation_config.json`` keeps what ``generate`` (the core's, docs/design.md#fast-generation) reads:
transformers' own ``max_new_tokens``, ``temperature``, ``top_p``, ``top_k``, ``do_sample`` (False means
argmax) and ``suppress_tokens``, plus the diffusion settings under ``generate``'s names. Unset values are
``SamplingConfig``'s defaults, the original sampler's.
"""

from __future__ import annotations

from typing import Any

from transformers import GenerationConfig

from ..generate import ALIASES
from ..sampling import SamplingConfig

_DEFAULT = SamplingConfig()
# Settings ``generate`` takes under the same name as the SamplingConfig field holding their default.
DIFFUSION_SETTINGS = ("steps", "block_length", "strategy", "confidence", "threshold", "factor", "eb_gamma", "cache",
                      "cache_refresh", "stop_at_eos")
# transformers' own generation keys whose meaning the sampler shares, with the sampler's defaults.
SHARED_SETTINGS = {"temperature": _DEFAULT.temperature, "top_p": _DEFAULT.top_p, "top_k": _DEFAULT.top_k,
                   "do_sample": not _DEFAULT.greedy}


class DiffusionGenerationConfig(GenerationConfig):
    """``GenerationConfig`` with the diffusion sampler's settings; saved and loaded as transformers' own."""

    def __init__(self, **kwargs: Any) -> None:
        for name in DIFFUSION_SETTINGS:
            setattr(self, name, kwargs.pop(name, getattr(_DEFAULT, name)))
        for name, default in SHARED_SETTINGS.items():
            kwargs.setdefault(name, default)
        # transformers drops unknown keys of a config marked as derived from the model config: never mark it.
        kwargs["_from_model_config"] = False
        super().__init__(**kwargs)

    @classmethod
    def adopt(cls, config: GenerationConfig) -> DiffusionGenerationConfig:
        """This class from transformers' own: one loaded from our generation_config.json keeps every value, any
        other (derived from config.json, or a foreign file) keeps only what it sets beyond transformers' defaults."""
        if isinstance(config, cls):
            return config
        ours = any(hasattr(config, name) for name in DIFFUSION_SETTINGS)
        return cls.from_dict(config.to_dict() if ours else config.to_diff_dict())

    def to_diff_dict(self) -> dict[str, Any]:
        """Every sampler setting is written, even one equal to transformers' default (``top_p=None``)."""
        names = (*DIFFUSION_SETTINGS, *SHARED_SETTINGS)
        return {**super().to_diff_dict(), **{name: getattr(self, name) for name in names}}

    def sampler_arguments(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments of ``generate``: these settings, replaced by the caller's ``overrides`` (which may
        use transformers' ``do_sample`` or a peer's alias, e.g. ``gen_length``, ``alg``)."""
        settings: dict[str, Any] = {name: getattr(self, name) for name in DIFFUSION_SETTINGS}
        settings.update(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                        top_k=self.top_k, greedy=self.do_sample is False, suppress_tokens=tuple(self.suppress_tokens or ()))
        overrides = dict(overrides)
        if "do_sample" in overrides:
            overrides["greedy"] = not overrides.pop("do_sample")
        for alias, names in ALIASES.items():
            if alias in overrides:
                for name in names:
                    settings.pop(name, None)
        if settings["temperature"] is None:
            settings["temperature"] = _DEFAULT.temperature
        return {**settings, **overrides}
