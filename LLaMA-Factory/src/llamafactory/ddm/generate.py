"""``generate``: prompt in, prompt + generation out, with the names LLaDA and Dream users know
(docs/design.md#fast-generation, #sampler-settings).

A thin layer over the one reverse loop (``sampling.sample``): it appends ``max_new_tokens`` masks to
left-padded prompts, turns every setting's other spellings (the original's, the peers' ``gen_length``,
``block_size``) and the peers' rule names (``alg``, ``remasking``) into ``SamplingConfig`` fields and returns
what Dream's and LLaDA's ``generate`` return. Its sampler keywords are the schema's (``settings.SETTINGS``),
with its defaults: the original sampler's (random order, temperature 0.95, nucleus 0.9, T = 64, one block,
no cache); ``temperature=0`` means argmax, ``top_p=None`` turns the nucleus off.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import UserInputError
from .checkpoints.metadata import position_limit
from .model import DiffusionLM
from .sampling import sample
from .settings import (
    BY_NAME,
    GENERATE_SETTINGS,
    MAX_NEW_TOKENS,
    RULE_ALIASES,
    SETTINGS,
    SamplingConfig,
    canonical,
    takes_settings,
)
from .strategies import resolve_rule


@dataclass
class GenerateOutput:
    """``sequences`` ``[B, prompt + new]`` (prompt included, as Dream and LLaDA return), the per-step
    ``history`` when asked, and ``nfe`` ``[B]``: the denoiser evaluations each row needed."""

    sequences: torch.Tensor
    nfe: torch.Tensor
    history: list[torch.Tensor] = field(default_factory=list)


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


def sampler_config(settings: Mapping[str, Any], *, shift: bool, record_history: bool = False) -> tuple[int, SamplingConfig]:
    """``(max_new_tokens, SamplingConfig)`` from ``generate``'s sampler keywords, any spelling; checked."""
    values = canonical(settings)
    unknown = [key for key in values if key not in BY_NAME and key not in RULE_ALIASES and key != MAX_NEW_TOKENS.name]
    if unknown:
        raise TypeError(f"generate() got an unexpected keyword argument {unknown[0]!r}")
    new_tokens = values.pop(MAX_NEW_TOKENS.name, None)
    MAX_NEW_TOKENS.check(new_tokens)
    resolved = resolve_rule(values.pop("strategy", None), alg=values.pop("alg", None),
                            remasking=values.pop("remasking", None), confidence=values.pop("confidence", None),
                            schedule=values.pop("schedule", None),
                            confidence_distribution=values.pop("confidence_distribution", None),
                            rule_settings=[s.rule for s in SETTINGS if s.rule is not None and s.name in values])
    rule = {name: value for name, value in vars(resolved).items() if value is not None}
    config = SamplingConfig(**values, **rule, shift=shift, record_history=record_history)
    config.validate()
    return new_tokens, config


@takes_settings(GENERATE_SETTINGS, {name: str | None for name in RULE_ALIASES})
@torch.no_grad()
def generate(
    model: DiffusionLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    output_history: bool = False,
    return_dict: bool = False,
    progress: Callable[[int], None] | None = None,
    **settings: Any,
) -> torch.Tensor | GenerateOutput:
    """Generate ``max_new_tokens`` (alias ``gen_length``) tokens after each prompt of ``input_ids`` ``[B, P]``.

    ``attention_mask`` marks real prompt tokens (left padding; under shift each prompt starts with its
    BOS). ``settings`` are the sampler's, by name or any other spelling (the signature lists them all);
    Dream's ``alg`` / LLaDA's ``remasking`` name a rule and a confidence measure and, unless given, select the
    peer's ``schedule`` and ``confidence_distribution="full"``. Returns the sequences, or a
    :class:`GenerateOutput` with ``return_dict``.
    """
    new_tokens, config = sampler_config(settings, shift=model.shift, record_history=output_history)
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

