"""How ``do_predict`` generates: the diffusion sampler settings (docs/design.md#sampling, #fast-generation)
and the AR length limit. The settings are checked by the core's ``SamplingConfig.validate``."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ddm.sampling import SamplingConfig


@dataclass
class GeneratingArguments:
    """Sampling keys of a config; ``diffusion_steps`` (the number of reverse steps) is a finetuning key."""

    logits_temp: float = field(
        default=1.0, metadata={"help": "Temperature applied to the logits (1.0, as the original; 0: argmax)."}
    )
    topp_temp: float | None = field(default=0.9, metadata={"help": "Nucleus (top-p) mass; null to turn off."})
    decoding_strategy: str = field(
        default="random",
        metadata={"help": "Which masked positions to fix each step: random, topk, confidence, threshold, factor, eb."},
    )
    greedy: bool = field(default=False, metadata={"help": "Take the argmax token instead of sampling."})
    confidence: str = field(default="prob", metadata={"help": "Confidence measure: prob, margin or entropy."})
    threshold: float = field(default=0.9, metadata={"help": "threshold rule: fix positions at least this confident."})
    factor: float = field(default=1.0, metadata={"help": "factor rule: its factor f."})
    eb_gamma: float = field(default=0.1, metadata={"help": "eb rule: entropy budget per step (nats)."})
    block_length: int | None = field(default=None, metadata={"help": "Generate in blocks of this many tokens."})
    cache: str = field(default="none", metadata={"help": "Key/value cache: none, prefix or dual."})
    cache_refresh: int | None = field(
        default=None, metadata={"help": "Refresh the cache every N steps (default: at block starts only)."}
    )
    stop_at_eos: bool = field(default=False, metadata={"help": "Stop a record once its EOS is fixed."})
    max_new_tokens: int = field(default=256, metadata={"help": "sft (AR) prediction: tokens generated at most."})

    def sampling_config(self, steps: int, shift: bool) -> SamplingConfig:
        """The core sampler settings these keys describe (not yet validated)."""
        return SamplingConfig(
            steps=steps, temperature=self.logits_temp, top_p=self.topp_temp, greedy=self.greedy,
            strategy=self.decoding_strategy, confidence=self.confidence, threshold=self.threshold,
            factor=self.factor, eb_gamma=self.eb_gamma, block_length=self.block_length, cache=self.cache,
            cache_refresh=self.cache_refresh, stop_at_eos=self.stop_at_eos, shift=shift,
        )
