"""The original quick-start API (``DiscreteDiffusionModel``, ``generate_samples``) over ``llamafactory.ddm``.

Kept so that code written against the original project runs unchanged::

    model = DiscreteDiffusionModel.from_pretrained("diffusionfamily/diffugpt-s", model="gpt2",
                                                   config=config, tokenizer=tokenizer, device="cuda")
    model = DiscreteDiffusionModel(model=llama_for_causal_lm, config=config, tokenizer=tokenizer, device="cuda")
    tokens = generate_samples(model, args, tokenizer, {"input_ids": ids, "src_mask": src}, verbose=False)
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from llamafactory.ddm import (
    SETTINGS,
    DiffusionLM,
    SamplingConfig,
    checkpoint_special_tokens,
    first_predicted_token,
    load_causal_lm,
    load_tokenizer,
    sample,
    start_token_id,
)
from llamafactory.ddm.settings import BY_NAME, canonical
from llamafactory.errors import UserInputError

logger = logging.getLogger(__name__)


def _sampler_settings(args: Any) -> dict[str, Any]:
    """The sampler settings ``args`` sets (not None), by name, each under any of its spellings; the step count
    and temperature are required, and a missing nucleus is off, as in the original."""
    given = {name: getattr(args, name) for setting in SETTINGS for name in setting.spellings
             if getattr(args, name, None) is not None}
    values = {"top_p": None, **canonical(given)}
    missing = [BY_NAME[name].label for name in ("steps", "temperature") if name not in values]
    if missing:
        raise UserInputError(f"generate_samples needs args.{' and args.'.join(missing)}")
    return values


class DiscreteDiffusionModel(DiffusionLM):
    """A diffusion LM built the original way: from a causal LM instance, or a config for a fresh one.

    ``model`` is a transformers causal LM, or a base model name / None, in which case a randomly
    initialised model is built from ``config`` (weights then come from ``from_pretrained``).
    Calling the model returns logits ``[batch, length, vocab]``.
    """

    def __init__(
        self,
        model: PreTrainedModel | str | None,
        config: PretrainedConfig,
        tokenizer: Any,
        device: torch.device | str | None = None,
        shift: bool = True,
    ) -> None:
        if not isinstance(model, PreTrainedModel):
            model = AutoModelForCausalLM.from_config(config)
        vocab_rows = model.get_input_embeddings().weight.shape[0]
        tokens = checkpoint_special_tokens(tokenizer, model.config, vocab_rows)
        super().__init__(model, tokens, shift=shift)
        self.tokenizer = tokenizer
        if device is not None:
            self.to(device)

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        model: str | None = None,
        config: PretrainedConfig | None = None,
        tokenizer: Any = None,
        device: torch.device | str | None = None,
        *,
        dtype: torch.dtype | None = None,
        attn_implementation: str = "sdpa",
        shift: bool = True,
    ) -> DiscreteDiffusionModel:
        """Load a DiffuGPT / DiffuLLaMA checkpoint (local directory or Hub id) of either released layout.

        The checkpoint's own config wins; ``config`` (or the base ``model`` name) is only used when the
        checkpoint has none, as the original used the base model solely for its configuration.
        """
        causal_lm = load_causal_lm(
            name, base_config=config if config is not None else model, dtype=dtype,
            attn_implementation=attn_implementation,
        )
        if tokenizer is None:
            tokenizer = load_tokenizer(name, fallback=model)
        return cls(causal_lm, causal_lm.config, tokenizer, device=device, shift=shift)


def generate_samples(
    model: DiffusionLM, args: Any, tokenizer: Any, inputs: dict[str, torch.Tensor], verbose: bool = False
) -> torch.Tensor:
    """Sample with the original argument names; returns what the original returned: the token ids without
    position 0 under shift (``[batch, length - 1]``), all of them otherwise.

    ``args`` needs ``diffusion_steps``, ``logits_temp``, ``topp_temp`` (None: off) and ``shift``; any other
    sampler setting it has, under any spelling, is used too (``strategy``, ``greedy``, ``block_length``, ...),
    and ``seed`` seeds the draws. ``inputs`` holds ``input_ids`` and optionally ``src_mask`` (True/1 = given
    token); without it every token is generated except token 0, which becomes the start token under the
    shift (README: differences from the original). With ``verbose`` each step's text is logged.
    """
    input_ids = torch.as_tensor(inputs["input_ids"]).to(model.device)
    src_mask = inputs.get("src_mask")
    if src_mask is not None:
        src_mask = torch.as_tensor(src_mask).to(model.device).bool()
    elif args.shift:
        # Unconditional call: everything is generated except token 0, which the shift never predicts.
        input_ids = input_ids.clone()
        input_ids[:, 0] = start_token_id(tokenizer)
    config = SamplingConfig(**_sampler_settings(args), shift=bool(args.shift), record_history=verbose)
    seed = getattr(args, "seed", None)
    generator = torch.Generator(model.device).manual_seed(int(seed)) if seed is not None else None
    output = sample(model, input_ids, model.mask_id, config, src_mask=src_mask, generator=generator)
    for step, tokens in enumerate(output.history):
        logger.info("step %d: %s", step, tokenizer.decode(tokens[0].tolist()))
    return output.tokens[:, first_predicted_token(config.shift) :]
