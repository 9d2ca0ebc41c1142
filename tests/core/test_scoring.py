"""The likelihood scorer (docs/design.md#likelihood-scoring): both estimators, batched == direct,
batch-size independent, ELBO."""

import math

import pytest
import torch
import torch.nn.functional as F

from llamafactory.ddm import DiffusionLM, SpecialTokens, level_masks, score_continuations, sequence_nll
from tests.tiny import tiny_gpt2
from tests.tolerance import close

VOCAB, MASK = 48, 5


def _model() -> DiffusionLM:
    return DiffusionLM(tiny_gpt2(VOCAB, seed=3), SpecialTokens(mask_id=MASK, pad_id=3)).eval()


def _direct_score(model, context, continuation, steps, seed, estimator):
    """One example, one level at a time, no padding: the definition written out (an empty level adds 0)."""
    total = 0.0
    for positions in level_masks(len(continuation), steps, seed, estimator):
        if not positions:
            continue
        ids = torch.tensor([context + continuation])
        targets = ids.clone()
        for p in positions:
            ids[0, len(context) + p] = MASK
        logits = model.token_logits(ids)[0]
        rows = [len(context) + p for p in positions]
        total += F.cross_entropy(logits[rows], targets[0, rows]).item()
    return total / steps


def _examples():
    generator = torch.Generator().manual_seed(0)
    contexts, continuations = [], []
    for n_ctx, n_cont in [(3, 2), (7, 5), (1, 1), (12, 4), (5, 9), (2, 3), (9, 1), (4, 6), (6, 2), (8, 3)]:
        contexts.append(torch.randint(8, VOCAB, (n_ctx,), generator=generator).tolist())
        continuations.append(torch.randint(8, VOCAB, (n_cont,), generator=generator).tolist())
    return contexts, continuations


def test_exact_level_masks_count_and_determinism():
    masks = level_masks(10, 4, seed=1, estimator="exact")
    assert [len(m) for m in masks] == [10, 8, 5, 3]
    assert masks == level_masks(10, 4, seed=1, estimator="exact")
    assert [len(m) for m in level_masks(1, 32, seed=0, estimator="exact")] == [1] * 32


def test_original_level_masks_are_bernoulli_draws_from_the_seeded_generator():
    n, steps, seed = 7, 5, 11
    generator = torch.Generator().manual_seed(seed)
    expected = []
    for t in (5, 4, 3, 2, 1):  # rate t/T, one uniform per continuation token
        uniforms = torch.rand(n, generator=generator).tolist()
        expected.append([i for i, u in enumerate(uniforms) if u < t / steps])
    assert level_masks(n, steps, seed, "original") == expected
    assert expected[0] == list(range(n))  # t = T masks everything


def test_original_level_masks_mask_each_token_with_probability_t_over_t():
    n, steps, seeds = 20, 4, 400
    counts = torch.zeros(steps)
    for seed in range(seeds):
        for level, positions in enumerate(level_masks(n, steps, seed, "original")):
            counts[level] += len(positions)
    rates = (counts / (n * seeds)).tolist()
    assert rates == pytest.approx([1.0, 0.75, 0.5, 0.25], abs=0.02)  # binomial sd < 0.008


def test_unknown_estimator_is_a_user_error():
    from llamafactory.errors import UserInputError

    with pytest.raises(UserInputError, match="unknown scorer 'exactly'"):
        level_masks(3, 2, 0, "exactly")


@pytest.mark.parametrize("estimator", ["original", "exact"])
def test_batched_scores_equal_direct_per_example_computation(estimator):
    model = _model()
    contexts, continuations = _examples()
    batched = score_continuations(model, contexts, continuations, steps=6, seed=2, estimator=estimator, batch_size=8)
    direct = [_direct_score(model, c, x, 6, 2, estimator) for c, x in zip(contexts, continuations)]
    assert batched == close(direct)


def test_an_original_level_with_nothing_masked_adds_zero():
    model = _model()
    context, continuation, steps = [1, 2, 3], [20, 21], 8
    seed = next(s for s in range(100) if any(not m for m in level_masks(2, steps, s, "original")))
    masks = level_masks(2, steps, seed, "original")
    levels = []
    for positions in masks:
        if positions:
            ids = torch.tensor([context + continuation])
            targets = ids.clone()
            rows = [len(context) + p for p in positions]
            ids[0, rows] = MASK
            levels.append(F.cross_entropy(model.token_logits(ids)[0][rows], targets[0, rows]).item())
    assert len(levels) < steps
    expected = sum(levels) / steps  # the empty levels count in the 1/T, with 0
    (score,) = score_continuations(model, [context], [continuation], steps=steps, seed=seed)
    assert score == close(expected)


@pytest.mark.parametrize("estimator", ["original", "exact"])
def test_scores_do_not_depend_on_batch_size(estimator):
    model = _model()
    contexts, continuations = _examples()
    one = score_continuations(model, contexts, continuations, steps=5, estimator=estimator, batch_size=1)
    eight = score_continuations(model, contexts, continuations, steps=5, estimator=estimator, batch_size=8)
    assert one == close(eight)
    ranked_one = sorted(range(len(one)), key=one.__getitem__)
    assert ranked_one == sorted(range(len(eight)), key=eight.__getitem__)


def test_multiple_choice_prefers_the_trained_answer():
    torch.manual_seed(0)
    hf = tiny_gpt2(VOCAB, seed=4).train()
    model = DiffusionLM(hf, SpecialTokens(mask_id=MASK, pad_id=3))
    context, right, wrong = [10, 11, 12], [20, 21, 22], [30, 31, 32]
    optimiser = torch.optim.AdamW(hf.parameters(), lr=1e-2)
    from llamafactory.ddm import training_loss

    ids = torch.tensor([context + right] * 8)
    src = torch.zeros_like(ids, dtype=torch.bool)
    src[:, :3] = True
    for _ in range(30):
        loss = training_loss(hf, ids, MASK, src_mask=src).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    right_score, wrong_score = score_continuations(model, [context, context], [right, wrong], steps=4)
    assert right_score < wrong_score


def test_sequence_nll_is_deterministic_and_counts_scored_tokens():
    model = _model()
    sequences = [[0, 10, 11, 12, 13], [0, 20, 21]]
    first = sequence_nll(model, sequences, steps=4, prompt_lengths=[2, 0])
    assert first == sequence_nll(model, sequences, steps=4, prompt_lengths=[2, 0])  # the same computation
    one_by_one = sequence_nll(model, sequences, steps=4, prompt_lengths=[2, 0], batch_size=1)
    assert [v for v, _ in one_by_one] == close([v for v, _ in first])  # other batch shapes
    assert [n for _, n in first] == [n for _, n in one_by_one] == [3, 2]
    # near-uniform random model: about log(VOCAB) nats per token
    per_token = sum(v for v, _ in first) / 5
    assert 0.5 * math.log(VOCAB) < per_token < 2 * math.log(VOCAB)
