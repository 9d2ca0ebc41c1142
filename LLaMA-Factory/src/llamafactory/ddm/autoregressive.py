"""Left-to-right generation from an autoregressive model: the one decoder that the ``sft`` stage's
prediction, the evaluation's AR baselines and the examples use (transformers' ``generate``, batched).

It sits beside the diffusion core so that AR baselines and diffusion models are decoded from one public API."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from transformers import GenerationConfig, PreTrainedModel


@torch.no_grad()
def generate_continuations(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    pad_id: int,
    eos_ids: Collection[int] = (),
    do_sample: bool = False,
    temperature: float | None = None,
    top_p: float | None = None,
) -> list[list[int]]:
    """The tokens generated after each prompt, cut before the first of ``eos_ids``.

    Prompts are left-padded into one batch (padding hidden by the attention mask), so every row continues
    at the same column. With no ``eos_ids`` every row runs the full ``max_new_tokens``: the model's own
    EOS does not stop it.
    """
    width = max(len(prompt) for prompt in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    keep = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.as_tensor(list(prompt), dtype=torch.long)
        keep[row, width - len(prompt) :] = 1
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=pad_id,
                              eos_token_id=sorted(eos_ids), **({"temperature": temperature, "top_p": top_p}
                                                               if do_sample else {}))
    device = next(model.parameters()).device
    output = model.generate(input_ids=ids.to(device), attention_mask=keep.to(device), generation_config=config)
    continuations = []
    for generated in output[:, width:].tolist():
        cut = next((k for k, token in enumerate(generated) if token in eos_ids), len(generated))
        continuations.append(generated[:cut])
    return continuations
