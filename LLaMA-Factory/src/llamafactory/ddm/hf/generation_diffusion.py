"""The sampler's defaults as a transformers ``GenerationConfig`` (docs/design.md#hf-native-format).

``generation_config.json`` keeps every sampler setting of the schema (docs/design.md#sampler-settings) under
its name, transformers' own keys among them (``temperature``, ``top_p``, ``top_k``, ``suppress_tokens``),
except ``greedy``, which is transformers' ``do_sample`` (False means argmax); and transformers'
``max_new_tokens``. Unset values are the schema's defaults, the original sampler's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import GenerationConfig

from ..settings import BY_NAME, RULE_ALIASES, SETTINGS, canonical

# ``greedy`` is kept as transformers' ``do_sample``, its negation; every other setting under its own name.
GREEDY = BY_NAME["greedy"]
STORED = tuple(s for s in SETTINGS if s is not GREEDY)
# Settings transformers' own GenerationConfig lacks: a config holding one was written by this class.
DIFFUSION_ONLY = tuple(s.name for s in STORED if not hasattr(GenerationConfig(), s.name))


class DiffusionGenerationConfig(GenerationConfig):
    """``GenerationConfig`` with the diffusion sampler's settings; saved and loaded as transformers' own."""

    def __init__(self, **kwargs: Any) -> None:
        for s in STORED:
            kwargs.setdefault(s.name, s.default)
        kwargs.setdefault("do_sample", not GREEDY.default)
        # transformers drops unknown keys of a config marked as derived from the model config: never mark it.
        kwargs["_from_model_config"] = False
        super().__init__(**kwargs)

    def validate(self, strict: bool = False, **kwargs: Any) -> None:
        """transformers' checks, never strict: its rule that ``temperature`` / ``top_p`` go unused without
        ``do_sample`` is about left-to-right decoding, while the diffusion sampler's confidences use them under
        ``greedy`` too, so a greedy config must still save."""
        super().validate(strict=False, **kwargs)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **kwargs: Any) -> DiffusionGenerationConfig:
        """A config holding ``settings`` (by name, as ``SamplingConfig.settings`` gives them) and ``kwargs``."""
        values = dict(settings)
        if GREEDY.name in values:
            kwargs["do_sample"] = not values.pop(GREEDY.name)
        return cls(**values, **kwargs)

    @classmethod
    def adopt(cls, config: GenerationConfig) -> DiffusionGenerationConfig:
        """This class from transformers' own: one loaded from our generation_config.json keeps every value, any
        other (derived from config.json, or a foreign file) keeps only what it sets beyond transformers' defaults."""
        if isinstance(config, cls):
            return config
        ours = any(hasattr(config, name) for name in DIFFUSION_ONLY)
        return cls.from_dict(config.to_dict() if ours else config.to_diff_dict())

    def to_diff_dict(self) -> dict[str, Any]:
        """Every sampler setting is written, even one equal to transformers' default (``top_p=None``)."""
        names = (*(s.name for s in STORED), "do_sample")
        return {**super().to_diff_dict(), **{name: getattr(self, name) for name in names}}

    def sampler_settings(self) -> dict[str, Any]:
        """Every setting by name (a value left None where the setting cannot be None: the schema default)."""
        values = {s.name: getattr(self, s.name) for s in STORED}
        values[GREEDY.name] = self.do_sample is False
        return {name: BY_NAME[name].default if value is None and not BY_NAME[name].optional else value
                for name, value in values.items()}

    def sampler_arguments(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments of ``generate``: these settings, replaced by the caller's ``overrides`` (which may
        use transformers' ``do_sample``, any spelling of a setting, e.g. ``gen_length``, or a peer's ``alg``)."""
        settings = {**self.sampler_settings(), "max_new_tokens": self.max_new_tokens}
        overrides = canonical(overrides)
        if "do_sample" in overrides:
            overrides[GREEDY.name] = not overrides.pop("do_sample")
        for alias, names in RULE_ALIASES.items():
            if alias in overrides:
                for name in names:
                    settings.pop(name, None)
        return {**settings, **overrides}
