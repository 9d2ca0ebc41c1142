"""The diffusion LM: an autoregressive transformer whose attention is made bidirectional.

Nothing in transformers is patched. Bidirectional attention comes from ``config.is_causal = False``
(persisted in config.json, honoured by eager, sdpa and flash_attention_2); annealing passes a 4D
float additive mask, which transformers hands to the attention kernels untouched.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from .attention import block_attention_inputs, check_block_kernel, check_block_size
from .tokens import SpecialTokens

# Config keys of architectures whose logits are transformed after the output head.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def _configs(config: PretrainedConfig) -> list[PretrainedConfig]:
    """A config and its text sub-config, when it has one (multimodal wrappers)."""
    text_config = getattr(config, "text_config", None)
    return [config] + ([text_config] if isinstance(text_config, PretrainedConfig) else [])


def make_bidirectional(model: nn.Module) -> nn.Module:
    """Switch a causal LM (possibly wrapped by peft) to full attention, in place."""
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"{type(model).__name__} has no `config`; expected a transformers model")
    for sub_config in _configs(config):
        sub_config.is_causal = False
    return model


def is_bidirectional(model: nn.Module) -> bool:
    """Whether the model's config asks for full attention."""
    return getattr(model.config, "is_causal", True) is False


# The shift convention (docs/design.md#shift): with ``shift`` the output at position ``i`` predicts token
# ``i + 1``, as in the AR model, so token 0 has no prediction and is always given (BOS). Every module
# that pairs outputs with tokens goes through the four functions below.


def first_predicted_token(shift: bool) -> int:
    """Index of the first token some output predicts: tokens before it are always given."""
    return 1 if shift else 0


def predicting_output(positions: torch.Tensor, shift: bool) -> torch.Tensor:
    """The output index whose prediction is the token at each of ``positions``."""
    return positions - 1 if shift else positions


def align_to_tokens(logits: torch.Tensor, shift: bool) -> torch.Tensor:
    """Re-index ``[batch, length, ...]`` outputs so that row ``i`` is the prediction for token ``i``.

    Under shift token 0 is never predicted and receives output 0 as filler.
    """
    if not shift:
        return logits
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def align_to_outputs(values: torch.Tensor, shift: bool, fill: int | bool | float) -> torch.Tensor:
    """Re-index per-token ``[batch, length]`` values (targets, masks) per output: under shift output ``i``
    gets token ``i + 1``'s value and the last output, which predicts nothing, gets ``fill``."""
    if not shift:
        return values
    return torch.cat([values[:, 1:], torch.full_like(values[:, :1], fill)], dim=1)


class DiffusionLM(nn.Module):
    """A bidirectional denoiser over any transformers causal LM that honours ``config.is_causal``.

    ``forward(input_ids, attention_mask=None, position_ids=None)`` returns raw logits ``[batch, length,
    vocab]``; with ``shift`` (the released models) output ``i`` predicts token ``i + 1``.
    ``attention_mask`` is either a 2D padding mask (1 = real token) or a 4D float additive mask
    ``[batch or 1, 1, length, length]`` (0 = attend, dtype minimum = blocked), e.g. for annealing.
    With ``block_size`` (block diffusion, docs/design.md#block-diffusion) a 2D or absent mask becomes the
    block-causal mask of the row's position ids: outputs of a block never depend on later blocks.
    """

    def __init__(self, model: PreTrainedModel, tokens: SpecialTokens, shift: bool = True,
                 block_size: int | None = None) -> None:
        super().__init__()
        self.model = make_bidirectional(model)
        self.tokens = tokens
        self.shift = shift
        self.block_size = check_block_size(block_size)
        if self.block_size is not None:
            config = self.causal_lm().config
            check_block_kernel(getattr(config, "_attn_implementation", None), config.model_type)

    @property
    def config(self) -> PretrainedConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def mask_id(self) -> int:
        return self.tokens.mask_id

    def attention_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                         position_ids: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The ``(attention_mask, position_ids)`` the transformer gets: as given, or block-causal under ``block_size``."""
        if self.block_size is None:
            return attention_mask, position_ids
        return block_attention_inputs(input_ids.shape, self.block_size, attention_mask=attention_mask,
                                      positions=position_ids, dtype=self.dtype, device=input_ids.device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        attention_mask, position_ids = self.attention_inputs(input_ids, attention_mask, position_ids)
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False).logits

    def causal_lm(self) -> PreTrainedModel:
        """The underlying transformers model (inside a peft wrapper, if any)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def has_plain_head(self) -> bool:
        """Whether logits are exactly ``output_head(hidden_states)`` (no scaling or soft-capping after it)."""
        config = self.causal_lm().config
        return not any(getattr(config, key, None) for key in _LOGIT_TRANSFORMS)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states ``[batch, length, hidden]``, before the output head; for inference only
        (it bypasses the top-level forward that distributed training wrappers hook)."""
        attention_mask, position_ids = self.attention_inputs(input_ids, attention_mask, position_ids)
        body = self.causal_lm().base_model
        return body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                    use_cache=False).last_hidden_state

    def output_head(self) -> nn.Module:
        return self.causal_lm().get_output_embeddings()

    def token_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits where row ``i`` predicts token ``i`` (the shift undone): the plain reference that tests and
        benchmarks compare the sampler's and scorer's own, cheaper paths against."""
        return align_to_tokens(self(input_ids, attention_mask), self.shift)
