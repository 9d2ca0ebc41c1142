"""The reverse-diffusion loop and its strategies (docs/design.md#sampling)."""

import math

import pytest
import torch

from llamafactory.ddm import DiffusionLM, SamplingConfig, SpecialTokens, sample
from llamafactory.ddm.sampling import nucleus_filter, topk_confidence
from llamafactory.errors import UserInputError
from tests.tiny import tiny_gpt2, tiny_llama

VOCAB, MASK = 48, 5


@pytest.fixture(scope="module")
def model() -> DiffusionLM:
    return DiffusionLM(tiny_gpt2(VOCAB), SpecialTokens(mask_id=MASK, bos_id=0)).eval()


def _prefixed(prefix_lengths, length=20):
    ids = torch.full((len(prefix_lengths), length), MASK)
    src = torch.zeros_like(ids, dtype=torch.bool)
    for row, n in enumerate(prefix_lengths):
        ids[row, :n] = torch.arange(10 + row, 10 + row + n)
        src[row, :n] = True
    return ids, src


def _seeded(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("strategy", ["random", "topk"])
@pytest.mark.parametrize("steps", [1, 4, 19, 32])
def test_given_tokens_kept_and_no_mask_left(model, strategy, steps):
    ids, src = _prefixed([3, 7])
    out = sample(model, ids, MASK, SamplingConfig(steps=steps, strategy=strategy), src_mask=src,
                 generator=torch.Generator().manual_seed(0)).tokens
    assert torch.equal(out[src], ids[src])
    assert not (out == MASK).any()


def test_infilling_keeps_prefix_and_suffix(model):
    ids = torch.randint(10, VOCAB, (2, 24), generator=torch.Generator().manual_seed(3))
    src = torch.ones_like(ids, dtype=torch.bool)
    src[0, 5:12] = False
    src[1, 8:20] = False
    out = sample(model, ids, MASK, SamplingConfig(steps=8), src_mask=src, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.tokens[src], ids[src])
    assert not (out.tokens == MASK).any()


def test_batch_rows_equal_single_runs_with_same_seeds(model):
    ids, src = _prefixed([2, 5, 9])
    config = SamplingConfig(steps=10)
    batched = sample(model, ids, MASK, config, src_mask=src, generator=_seeded([11, 12, 13])).tokens
    for row, seed in enumerate([11, 12, 13]):
        single = sample(model, ids[row : row + 1], MASK, config, src_mask=src[row : row + 1],
                        generator=_seeded([seed])).tokens
        assert torch.equal(single[0], batched[row])


def test_same_seed_same_output_and_other_seed_differs(model):
    ids, src = _prefixed([3])
    config = SamplingConfig(steps=8, temperature=1.5, top_p=None)
    first = sample(model, ids, MASK, config, src_mask=src, generator=torch.Generator().manual_seed(5)).tokens
    again = sample(model, ids, MASK, config, src_mask=src, generator=torch.Generator().manual_seed(5)).tokens
    other = sample(model, ids, MASK, config, src_mask=src, generator=torch.Generator().manual_seed(6)).tokens
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_greedy_topk_is_deterministic_without_a_generator(model):
    ids, src = _prefixed([4])
    config = SamplingConfig(steps=16, greedy=True, strategy="topk")
    assert torch.equal(sample(model, ids, MASK, config, src_mask=src).tokens,
                       sample(model, ids, MASK, config, src_mask=src).tokens)


def test_one_step_equals_argmax_of_one_forward(model):
    ids, src = _prefixed([3])
    out = sample(model, ids, MASK, SamplingConfig(steps=1, greedy=True, top_p=None, temperature=1.0), src_mask=src)
    noisy = torch.where(src, ids, torch.full_like(ids, MASK))
    logits = model.token_logits(noisy)
    logits[..., MASK] = -math.inf
    expected = torch.where(src, ids, logits.argmax(-1))
    assert torch.equal(out.tokens, expected)


def test_history_records_every_step_and_unmasks_monotonically(model):
    ids, src = _prefixed([2])
    out = sample(model, ids, MASK, SamplingConfig(steps=6, strategy="topk", record_history=True), src_mask=src)
    assert len(out.history) == 7
    counts = [int((h == MASK).sum()) for h in out.history]
    assert counts[0] == 18 and counts[-1] == 0
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_topk_keeps_floor_n_t_over_T_least_confident_masked():
    masked = torch.tensor([[True, True, True, True, False]])
    confidence = torch.tensor([[-0.1, -3.0, -0.5, -2.0, 0.0]])
    fix = topk_confidence(masked, confidence, 2, 4, torch.tensor([4]), [None])
    # keep floor(4 * 2 / 4) = 2 least confident masked (-3.0, -2.0); fix the other two
    assert fix.tolist() == [[True, False, True, False, False]]


def test_custom_strategy_is_one_function(model):
    def left_to_right(masked, confidence, steps_left, total, n_maskable, generators):
        first = masked.float().argmax(dim=1)
        fix = torch.zeros_like(masked)
        fix[torch.arange(masked.shape[0]), first] = True
        return fix & masked

    ids, src = _prefixed([3])
    out = sample(model, ids, MASK, SamplingConfig(steps=4, strategy=left_to_right, record_history=True), src_mask=src)
    assert not (out.tokens == MASK).any()
    assert (out.history[1] != MASK).sum() == 4  # the prefix plus exactly one fixed token


def test_nucleus_filter_keeps_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(nucleus_filter(logits, 0.7))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(nucleus_filter(logits, 1.0)).all()
    assert torch.isfinite(nucleus_filter(logits, 0.01)).sum() == 1


def test_works_with_llama_and_unshifted(model):
    llama = DiffusionLM(tiny_llama(VOCAB), SpecialTokens(mask_id=MASK), shift=False)
    ids = torch.full((1, 10), MASK)
    out = sample(llama, ids, MASK, SamplingConfig(steps=3, shift=False), generator=torch.Generator().manual_seed(0))
    assert not (out.tokens == MASK).any()


@pytest.mark.parametrize("bad", [dict(steps=0), dict(temperature=0.0), dict(top_p=1.5), dict(strategy="nope")])
def test_bad_settings_fail_clearly(model, bad):
    ids, src = _prefixed([2])
    with pytest.raises(UserInputError):
        sample(model, ids, MASK, SamplingConfig(**bad), src_mask=src)


def test_draws_follow_the_tempered_distribution_and_skip_the_mask():
    from llamafactory.ddm.sampling import propose

    probs = torch.tensor([0.1, 0.6, 0.3, 0.0])
    logits = probs.clamp_min(1e-30).log().repeat(20_000, 1)
    rows = torch.zeros(20_000, dtype=torch.long)
    config = SamplingConfig(temperature=1.0, top_p=None)
    tokens, log_probs = propose(logits, config, [torch.Generator().manual_seed(0)], rows, mask_id=1)
    freq = torch.bincount(tokens, minlength=4).float() / 20_000
    assert freq[1] == 0 and freq[3] == 0
    assert torch.allclose(freq, torch.tensor([0.25, 0.0, 0.75, 0.0]), atol=0.015)
    assert torch.allclose(log_probs, torch.log(torch.tensor([0.25, 1.0, 0.75, 1.0]))[tokens], atol=1e-5)


def test_nucleus_fast_path_equals_full_sort_on_flat_and_peaked_rows():
    from llamafactory.ddm import sampling

    torch.manual_seed(0)
    logits = torch.cat([torch.randn(4, 3000) * 0.1, torch.randn(4, 3000) * 8])  # flat rows, peaked rows
    fast = torch.isfinite(nucleus_filter(logits, 0.9))
    probs = logits.softmax(-1)
    ordered, order = probs.sort(dim=-1, descending=True)
    keep_sorted = (ordered.cumsum(-1) - ordered) < 0.9
    reference = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    assert torch.equal(fast, reference)
    assert sampling.NUCLEUS_FAST_K < fast[:4].sum(-1).min() and fast[4:].sum(-1).max() < sampling.NUCLEUS_FAST_K


def test_padding_width_does_not_change_a_row(model):
    ids, src = _prefixed([4], length=14)
    wide = torch.cat([ids, torch.full((1, 6), 3)], dim=1)
    wide_src = torch.cat([src, torch.ones(1, 6, dtype=torch.bool)], dim=1)
    keep = torch.cat([torch.ones(1, 14), torch.zeros(1, 6)], dim=1).long()
    config = SamplingConfig(steps=6)
    narrow = sample(model, ids, MASK, config, src_mask=src, generator=_seeded([3])).tokens
    padded = sample(lambda x: model(x, keep), wide, MASK, config, src_mask=wide_src, generator=_seeded([3])).tokens
    assert torch.equal(narrow[0], padded[0, :14])
