"""``generate``: prompt in, prompt + generation out, with the names LLaDA and Dream users know
(docs/design.md#fast-generation).

A thin layer over the one reverse loop (``sampling.sample``): it appends ``max_new_tokens`` masks to
left-padded prompts, turns the peers' spellings (``gen_length``, ``block_size``, ``alg``, ``remasking``)
into ``SamplingConfig`` fields and returns what Dream's and LLaDA's ``generate`` return. Defaults are
``SamplingConfig``'s (the original sampler's: random order, temperature 0.95, nucleus 0.9, T = 64, one
block, no cache); ``temperature=0`` means argmax, ``top_p=None`` turns the nucleus off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import UserInputError
from .checkpoints.metadata import position_limit
from .model import DiffusionLM
from .sampling import SamplingConfig, sample
from .strategies import Strategy, resolve_rule

_DEFAULT = SamplingConfig()

# Peers' spellings accepted by ``generate`` and the settings each stands for: a caller who gives one
# replaces the defaults of those settings (``alg`` and ``remasking`` name a rule and a confidence measure).
ALIASES: dict[str, tuple[str, ...]] = {
    "gen_length": ("max_new_tokens",), "block_size": ("block_length",),
    "alg": ("strategy", "confidence", "schedule", "confidence_distribution"),
    "remasking": ("strategy", "confidence", "schedule", "confidence_distribution"),
}


@dataclass
class GenerateOutput:
    """``sequences`` ``[B, prompt + new]`` (prompt included, as Dream and LLaDA return), the per-step
    ``history`` when asked, and ``nfe`` ``[B]``: the denoiser evaluations each row needed."""

    sequences: torch.Tensor
    nfe: torch.Tensor
    history: list[torch.Tensor] = field(default_factory=list)


def _one_of(name: str, value: int | None, alias: str, alias_value: int | None) -> int | None:
    if value is not None and alias_value is not None and value != alias_value:
        raise UserInputError(f"{name}={value} and its alias {alias}={alias_value} disagree; give one of them")
    return value if value is not None else alias_value


def _prompt_lengths(attention_mask: torch.Tensor) -> torch.Tensor:
    """Tokens per prompt; padding must come first (left padding), as for transformers' ``generate``."""
    lengths = attention_mask.long().sum(dim=1)
    columns = torch.arange(attention_mask.shape[1], device=attention_mask.device)[None, :]
    left_padded = attention_mask.bool() == (columns >= attention_mask.shape[1] - lengths[:, None])
    if not bool(left_padded.all()):
        raise UserInputError("prompts must be left-padded (attention_mask zeros before the tokens)")
    if bool((lengths == 0).any()):
        raise UserInputError("every prompt needs at least one token (a BOS token, for an unconditional sample)")
    return lengths


@torch.no_grad()
def generate(
    model: DiffusionLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int | None = None,
    gen_length: int | None = None,
    steps: int = _DEFAULT.steps,
    block_length: int | None = None,
    block_size: int | None = None,
    strategy: str | Strategy | None = None,
    alg: str | None = None,
    remasking: str | None = None,
    confidence: str | None = None,
    schedule: str | None = None,
    confidence_distribution: str | None = None,
    threshold: float = _DEFAULT.threshold,
    factor: float = _DEFAULT.factor,
    eb_gamma: float = _DEFAULT.eb_gamma,
    temperature: float = _DEFAULT.temperature,
    top_p: float | None = _DEFAULT.top_p,
    top_k: int | None = _DEFAULT.top_k,
    greedy: bool = _DEFAULT.greedy,
    cache: str = _DEFAULT.cache,
    cache_refresh: int | None = _DEFAULT.cache_refresh,
    stop_at_eos: bool = _DEFAULT.stop_at_eos,
    suppress_tokens: Sequence[int] = _DEFAULT.suppress_tokens,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    output_history: bool = False,
    return_dict: bool = False,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor | GenerateOutput:
    """Generate ``max_new_tokens`` (alias ``gen_length``) tokens after each prompt of ``input_ids`` ``[B, P]``.

    ``attention_mask`` marks real prompt tokens (left padding; under shift each prompt starts with its
    BOS). ``block_length`` (alias ``block_size``) generates left to right in blocks; ``strategy`` is a
    rule of ``STRATEGIES`` (or Dream's ``alg`` / LLaDA's ``remasking``, which also select the peer's
    ``schedule`` and ``confidence_distribution="full"`` unless those are given); ``cache`` is ``none``,
    ``prefix`` or ``dual``. Returns the sequences, or a :class:`GenerateOutput` with ``return_dict``.
    """
    new_tokens = _one_of("max_new_tokens", max_new_tokens, "gen_length", gen_length)
    if new_tokens is None or new_tokens < 1:
        raise UserInputError(f"max_new_tokens (gen_length) must be >= 1, got {new_tokens}")
    rule = resolve_rule(strategy, alg=alg, remasking=remasking, confidence=confidence, schedule=schedule,
                        confidence_distribution=confidence_distribution)
    config = SamplingConfig(
        steps=steps, temperature=temperature, top_p=top_p, top_k=top_k, greedy=greedy,
        strategy=_DEFAULT.strategy if rule.strategy is None else rule.strategy,
        confidence=_DEFAULT.confidence if rule.confidence is None else rule.confidence,
        schedule=_DEFAULT.schedule if rule.schedule is None else rule.schedule,
        confidence_distribution=(_DEFAULT.confidence_distribution if rule.confidence_distribution is None
                                 else rule.confidence_distribution),
        threshold=threshold, factor=factor, eb_gamma=eb_gamma,
        block_length=_one_of("block_length", block_length, "block_size", block_size),
        cache=cache, cache_refresh=cache_refresh, stop_at_eos=stop_at_eos, suppress_tokens=tuple(suppress_tokens),
        shift=model.shift, record_history=output_history,
    )
    config.validate()
    input_ids = input_ids.to(model.device)
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(model.device)
    _prompt_lengths(attention_mask)
    width = input_ids.shape[1] + new_tokens
    limit = position_limit(model.config)
    if limit is not None and width > limit:
        raise UserInputError(f"prompt ({input_ids.shape[1]} columns) + max_new_tokens ({new_tokens}) = {width} "
                             f"exceeds the model's {limit} positions")
    masks = torch.full((input_ids.shape[0], new_tokens), model.mask_id, dtype=input_ids.dtype, device=input_ids.device)
    ids = torch.cat([input_ids, masks], dim=1)
    padding = torch.cat([attention_mask.long(), torch.ones_like(masks)], dim=1)
    given = torch.zeros_like(ids, dtype=torch.bool)
    given[:, : input_ids.shape[1]] = True
    ids = ids.masked_fill(padding == 0, 1 if model.mask_id == 0 else 0)
    output = sample(model, ids, model.mask_id, config, src_mask=given,
                    attention_mask=None if bool(padding.all()) else padding, generator=generator, progress=progress)
    sequences = torch.where(padding.bool(), output.tokens, torch.cat([input_ids, masks], dim=1))
    if not return_dict:
        return sequences
    return GenerateOutput(sequences=sequences, nfe=output.nfe, history=output.history)
