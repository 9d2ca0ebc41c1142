"""How ``do_predict`` generates: the diffusion sampler settings (docs/design.md#sampling) and the AR length limit."""

from __future__ import annotations

from dataclasses import dataclass, field

DECODING_STRATEGIES = ("random", "topk")


@dataclass
class GeneratingArguments:
    """Sampling keys of a config; ``diffusion_steps`` (the number of reverse steps) is a finetuning key."""

    logits_temp: float = field(default=1.0, metadata={"help": "Temperature applied to the logits (1.0, as the original)."})
    topp_temp: float | None = field(default=0.9, metadata={"help": "Nucleus (top-p) mass; null to turn off."})
    decoding_strategy: str = field(
        default="random", metadata={"help": "Which masked positions to fix each step: random or topk."}
    )
    greedy: bool = field(default=False, metadata={"help": "Take the argmax token instead of sampling."})
    max_new_tokens: int = field(default=256, metadata={"help": "sft (AR) prediction: tokens generated at most."})
