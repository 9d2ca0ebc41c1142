"""Likelihood scoring of a block-diffusion model (docs/design.md#block-diffusion): every level's masked tokens are
scored from their block's conditional (the block noised, earlier blocks clean, later ones absent), equal to a
reference that runs one block at a time."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llamafactory.ddm import DiffusionLM, level_masks, make_bidirectional, score_continuations, sequence_nll
from llamafactory.ddm.tokens import SpecialTokens
from tests.core.test_block_loss import _block_causal
from tests.tiny import tiny_gpt2, tiny_llama
from tests.tolerance import close

BLOCK, STEPS, MASK = 3, 4, 7
BUILDERS = {"gpt2": tiny_gpt2, "llama": tiny_llama}


def _model(name: str, shift: bool = True) -> DiffusionLM:
    model = make_bidirectional(BUILDERS[name](60, seed=4))
    return DiffusionLM(model, SpecialTokens(mask_id=MASK, pad_id=2, eos_id=3), shift=shift, block_size=BLOCK).eval()


def _masked_ce(model: DiffusionLM, sequence: list[int], masked: list[int]) -> list[float]:
    """CE of each masked position, one forward per block holding one: clean blocks before it, then the block
    with its masked tokens replaced, block-causal (the AR alignment for the prediction)."""
    losses = {}
    for start in range(0, len(sequence), BLOCK):
        end = min(start + BLOCK, len(sequence))
        here = [p for p in masked if start <= p < end]
        if not here:
            continue
        ids = torch.tensor(sequence[:end])
        ids[here] = MASK
        with torch.no_grad():
            logits = model.model(input_ids=ids[None], attention_mask=_block_causal(end, BLOCK),
                                 position_ids=torch.arange(end)[None]).logits[0]
        for p in here:
            losses[p] = F.cross_entropy(logits[p - 1 if model.shift else p], torch.tensor(sequence[p])).item()
    return [losses[p] for p in masked]


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("estimator", ["original", "exact"])
def test_continuation_scores_equal_the_block_at_a_time_reference(name, estimator):
    model = _model(name)
    contexts = [[1, 20, 21, 22], [1, 30]]
    continuations = [[40, 41, 42, 43, 44], [50, 51, 52, 53, 54, 55, 56]]
    scores = score_continuations(model, contexts, continuations, steps=STEPS, seed=3, estimator=estimator,
                                 batch_size=3)
    expected = []
    for context, continuation in zip(contexts, continuations):
        total = 0.0
        for positions in level_masks(len(continuation), STEPS, 3, estimator):
            if positions:
                ce = _masked_ce(model, context + continuation, [len(context) + p for p in positions])
                total += sum(ce) / len(ce) / STEPS
        expected.append(total)
    assert scores == close(expected)


@pytest.mark.parametrize("shift", [True, False], ids=["shift", "no-shift"])
def test_sequence_nll_equals_the_block_at_a_time_reference(shift):
    model = _model("llama", shift)
    sequences = [[1, 11, 12, 13, 14, 15, 16, 17], [1, 21, 22, 23, 24]]
    results = sequence_nll(model, sequences, steps=STEPS, seed=5, batch_size=2, prompt_lengths=[2, 0])
    given = [2, 1 if shift else 0]
    for (nll, count), sequence, first in zip(results, sequences, given):
        n = len(sequence) - first
        expected = 0.0
        for level, positions in zip(range(STEPS, 0, -1), level_masks(n, STEPS, 5, "exact")):
            expected += sum(_masked_ce(model, sequence, [first + p for p in positions])) / level
        assert count == n and nll == close(expected)


def test_block_scoring_differs_from_full_sequence_scoring():
    """The block ELBO is another bound: the same model without a block size scores differently."""
    model = _model("gpt2")
    full = DiffusionLM(model.model, model.tokens, block_size=None)
    sequence = [[1, 11, 12, 13, 14, 15, 16, 17, 18]]
    block_nll, full_nll = sequence_nll(model, sequence, steps=STEPS)[0][0], sequence_nll(full, sequence, steps=STEPS)[0][0]
    assert math.isfinite(block_nll) and abs(block_nll - full_nll) > 1e-3
