"""The shared AR decoder: left-padded batches equal one-row greedy decoding; EOS ends a continuation."""

from __future__ import annotations

import torch

from llamafactory.ddm import generate_continuations
from llamafactory.tiny import tiny_gpt2, tiny_llama


def _greedy_by_hand(model, prompt: list[int], steps: int) -> list[int]:
    """Greedy decoding written out: full recomputation, argmax of the last position, no stopping."""
    ids = torch.tensor([prompt])
    for _ in range(steps):
        ids = torch.cat([ids, model(input_ids=ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, len(prompt):].tolist()


def test_left_padded_batch_equals_single_rows_for_gpt2_and_llama():
    prompts = [[5, 9, 13], [7, 8, 9, 10, 11, 12], [20]]
    for model in (tiny_gpt2(64, seed=5), tiny_llama(64, seed=5)):
        batch = generate_continuations(model, prompts, 5, pad_id=0)
        assert batch == [_greedy_by_hand(model, prompt, 5) for prompt in prompts]


def test_continuations_stop_before_the_first_eos():
    model = tiny_gpt2(64, seed=6)
    full = generate_continuations(model, [[3, 4, 5]], 6, pad_id=0)[0]
    stop = full[2]
    cut = generate_continuations(model, [[3, 4, 5]], 6, pad_id=0, eos_ids={stop})[0]
    assert cut == full[: full.index(stop)]
