"""How ``do_predict`` generates: the diffusion sampler settings (docs/design.md#sampling, #sampler-settings)
and the AR length limit. The sampler keys are the schema's, under the original configs' names where it
has one (``logits_temp``, ``topp_temp``, ``decoding_strategy``); the number of reverse steps is the
finetuning key ``diffusion_steps``. Values are checked by the core's ``SamplingConfig.validate``."""

from __future__ import annotations

from dataclasses import field

from ..ddm.settings import SETTINGS, SamplingConfig, with_settings

# The config keys of settings spelled the original way.
CONFIG_KEYS = {s.name: s.original for s in SETTINGS if s.original}


@with_settings(spelling=CONFIG_KEYS, defaults={"temperature": 1.0}, exclude=("steps",))
class GeneratingArguments:
    """Sampling keys of a config (temperature 1.0, as the original predict path); ``diffusion_steps`` (the
    number of reverse steps) is a finetuning key."""

    max_new_tokens: int = field(default=256, metadata={"help": "sft (AR) prediction: tokens generated at most."})

    def sampling_config(self, steps: int, shift: bool) -> SamplingConfig:
        """The core sampler settings these keys describe (not yet validated)."""
        return SamplingConfig(**self.settings(), steps=steps, shift=shift)
