"""Token sequences for each stage, built from the standard ``text`` / ``prompt``+``response`` records.

* pre-training (``pt`` and ``ddm``): each text + EOS; with packing the batch is concatenated and cut into
  ``cutoff_len`` blocks (the tail shorter than a block is dropped), else each text is truncated.
* ``sft``: ``[BOS] prompt response [EOS]``; labels hide BOS and the prompt (IGNORE_INDEX).
* ``ddm-sft`` (docs/design.md#supervised-fine-tuning-layout-ddm-sft): ``[BOS] prompt [SEP] response [EOS]`` right-padded with PAD to ``cutoff_len``;
  ``src_mask`` is True on the first ``len(prompt) + 2`` positions.
Too long: keep the response and cut the prompt from the left; a response that alone does not fit loses
its end.
"""

from __future__ import annotations

from typing import Any

from ..ddm import FramingTokens

IGNORE_INDEX = -100


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def pretrain_batch(batch: dict[str, list[str]], *, tokenizer: Any, tokens: FramingTokens, cutoff_len: int,
                   packing: bool) -> dict[str, list[list[int]]]:
    sequences = [ids + [tokens.eos] for ids in _encode(tokenizer, batch["text"])]
    if not packing:
        return {"input_ids": [ids[:cutoff_len] for ids in sequences]}
    stream = [token for ids in sequences for token in ids]
    usable = len(stream) - len(stream) % cutoff_len
    return {"input_ids": [stream[start : start + cutoff_len] for start in range(0, usable, cutoff_len)]}


def fit_prompt_response(prompt: list[int], response: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Shorten to ``len(prompt) + len(response) <= budget``: the prompt loses its start, then the response its end."""
    response = response[:budget]
    keep = budget - len(response)
    return (prompt[len(prompt) - keep :] if keep > 0 else []), response


def _rendered_prompts(batch: dict[str, list[str]], template: Any) -> list[str]:
    return [template.render(prompt, system) for prompt, system in zip(batch["prompt"], batch["system"])]


def supervised_batch(batch: dict[str, list[str]], *, tokenizer: Any, tokens: FramingTokens, cutoff_len: int,
                     template: Any, train_on_prompt: bool) -> dict[str, list[list[int]]]:
    prefix = [tokens.bos]
    prompts = _encode(tokenizer, _rendered_prompts(batch, template))
    responses = _encode(tokenizer, batch["response"])
    out: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
    for prompt, response in zip(prompts, responses):
        prompt, response = fit_prompt_response(prompt, response + [tokens.eos], cutoff_len - len(prefix))
        source = prefix + prompt
        out["input_ids"].append(source + response)
        out["labels"].append((source if train_on_prompt else [IGNORE_INDEX] * len(source)) + response)
    return out


def ddm_sft_batch(batch: dict[str, list[str]], *, tokenizer: Any, tokens: FramingTokens, cutoff_len: int,
                  template: Any) -> dict[str, list[list[int]]]:
    prompts = _encode(tokenizer, _rendered_prompts(batch, template))
    responses = _encode(tokenizer, batch["response"])
    out: dict[str, list[list[int]]] = {"input_ids": [], "src_mask": []}
    for prompt, response in zip(prompts, responses):
        prompt, response = fit_prompt_response(prompt, response, cutoff_len - 3)
        ids = [tokens.bos] + prompt + [tokens.sep] + response + [tokens.eos]
        given = len(prompt) + 2
        out["input_ids"].append(ids + [tokens.pad] * (cutoff_len - len(ids)))
        out["src_mask"].append([1] * given + [0] * (cutoff_len - given))
    return out
