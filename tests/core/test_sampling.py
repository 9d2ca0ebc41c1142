"""The reverse-diffusion loop, its rules and its settings (docs/design.md#sampling, #fast-generation)."""

import json
import math

import pytest
import torch

from llamafactory.ddm import STRATEGIES, DiffusionLM, SamplingConfig, SpecialTokens, Step, sample
from llamafactory.ddm.proposals import NUCLEUS_FAST_K, nucleus_filter, propose
from llamafactory.ddm.strategies import (
    confidence_factor,
    confidence_threshold,
    entropy_bounded,
    lowest_confidence_kept,
    original_topk,
)
from llamafactory.errors import UserInputError
from tests.core.sampling_cases import CASES, REFERENCE, prefixed, run_case, run_padded_case
from tests.tiny import tiny_gpt2, tiny_llama

VOCAB, MASK = 48, 5


@pytest.fixture(scope="module")
def model() -> DiffusionLM:
    return DiffusionLM(tiny_gpt2(VOCAB), SpecialTokens(mask_id=MASK, bos_id=0)).eval()


def _holes():
    """Two rows with given tokens on both sides of holes of different lengths and places."""
    ids = torch.randint(10, VOCAB, (2, 24), generator=torch.Generator().manual_seed(3))
    src = torch.ones_like(ids, dtype=torch.bool)
    src[0, 5:12] = False
    src[1, 8:20] = False
    return ids, src


def _seeded(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def _step(masked, confidence, steps_left=2, total=4, maskable=None, entropy=None, **settings):
    masked = torch.tensor([masked])
    return Step(masked=masked, maskable=masked if maskable is None else torch.tensor([maskable]),
                confidence=torch.tensor([confidence]).log(), entropy=None if entropy is None else torch.tensor([entropy]),
                steps_left=torch.tensor([steps_left]), total=torch.tensor([total]), generators=[None],
                settings=SamplingConfig(**settings))


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("block_length", [None, 24])
def test_one_block_reproduces_the_recorded_sampler_outputs(name, block_length):
    """block_length = n and no cache is the sampler before fast generation, token for token."""
    assert run_case(name, block_length=block_length) == json.loads(REFERENCE.read_text())[name]


def test_a_padded_batch_through_a_denoiser_callable_reproduces_the_recorded_outputs():
    assert run_padded_case() == json.loads(REFERENCE.read_text())["padded_denoiser"]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("block_length", [None, 4])
def test_every_rule_and_cache_keeps_given_tokens_fills_every_mask_within_the_step_budget(model, strategy, cache,
                                                                                          block_length):
    config = SamplingConfig(steps=6, strategy=strategy, cache=cache, block_length=block_length, record_history=True)
    for ids, src in (prefixed([3, 7]), _holes()):
        out = sample(model, ids, MASK, config, src_mask=src, generator=_seeded([0, 1]))
        assert torch.equal(out.tokens[src], ids[src])
        assert not (out.tokens == MASK).any()
        assert int(out.nfe.max()) <= 6
        changes = sum((before != after).any(dim=1).long() for before, after in zip(out.history, out.history[1:]))
        assert bool((changes <= out.nfe).all())
        assert all(torch.equal(h[src], ids[src]) for h in out.history)


def test_batch_rows_equal_single_runs_with_same_seeds(model):
    ids, src = prefixed([2, 5, 9])
    config = SamplingConfig(steps=10)
    batched = sample(model, ids, MASK, config, src_mask=src, generator=_seeded([11, 12, 13])).tokens
    for row, seed in enumerate([11, 12, 13]):
        single = sample(model, ids[row : row + 1], MASK, config, src_mask=src[row : row + 1],
                        generator=_seeded([seed])).tokens
        assert torch.equal(single[0], batched[row])


def test_same_seed_same_output_and_other_seed_differs(model):
    ids, src = prefixed([3])
    config = SamplingConfig(steps=8, temperature=1.5, top_p=None)
    first = sample(model, ids, MASK, config, src_mask=src, generator=torch.Generator().manual_seed(5)).tokens
    again = sample(model, ids, MASK, config, src_mask=src, generator=torch.Generator().manual_seed(5)).tokens
    other = sample(model, ids, MASK, config, src_mask=src, generator=torch.Generator().manual_seed(6)).tokens
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_greedy_topk_is_deterministic_without_a_generator(model):
    ids, src = prefixed([4])
    config = SamplingConfig(steps=16, greedy=True, strategy="topk")
    assert torch.equal(sample(model, ids, MASK, config, src_mask=src).tokens,
                       sample(model, ids, MASK, config, src_mask=src).tokens)


@pytest.mark.parametrize("settings", [dict(greedy=True, temperature=1.0), dict(temperature=0.0)])
def test_one_step_equals_argmax_of_one_forward(model, settings):
    ids, src = prefixed([3])
    out = sample(model, ids, MASK, SamplingConfig(steps=1, top_p=None, **settings), src_mask=src)
    noisy = torch.where(src, ids, torch.full_like(ids, MASK))
    logits = model.token_logits(noisy)
    logits[..., MASK] = -math.inf
    expected = torch.where(src, ids, logits.argmax(-1))
    assert torch.equal(out.tokens, expected)


def test_history_records_every_step_and_unmasks_monotonically(model):
    ids, src = prefixed([2])
    out = sample(model, ids, MASK, SamplingConfig(steps=6, strategy="confidence", record_history=True), src_mask=src)
    assert len(out.history) == 7
    counts = [int((h == MASK).sum()) for h in out.history]
    assert counts == [math.floor(18 * t / 6) for t in range(6, -1, -1)]  # confidence keeps exactly k masked


def test_original_topk_leaves_the_reference_number_of_masks_after_each_step(model):
    """At level t the keep-masked set is every initially maskable position scoring below the (k+1)-th lowest
    fresh score (k = floor(n t / T)); still-masked positions outside it are fixed. Recomputed here from the
    logits the sampler saw, for a fixed model and inputs (greedy: the candidate is the argmax)."""
    ids, src = prefixed([3], length=26)
    seen = []

    def recording(tokens):
        logits = model(tokens)
        seen.append(logits)
        return logits

    steps = 8
    out = sample(recording, ids, MASK, SamplingConfig(steps=steps, strategy="topk", greedy=True, temperature=1.0,
                                                      top_p=None, record_history=True), src_mask=src)
    maskable = ~src[0]
    n = int(maskable.sum())
    for step, logits in enumerate(seen[:-1]):
        t = steps - 1 - step
        log_probs = logits[0].float().log_softmax(-1)
        log_probs[:, MASK] = -math.inf  # the mask is never proposed: renormalise without it
        scores = torch.cat([log_probs[:1], log_probs[:-1]]).log_softmax(-1).max(-1).values  # output j-1 -> token j
        scores = scores.masked_fill(~maskable, math.inf)
        kth = scores.sort().values[math.floor(n * t / steps)]
        before = out.history[step][0] == MASK
        expected = int((before & (scores < kth)).sum())
        assert int((out.history[step + 1][0] == MASK).sum()) == expected
    assert not (out.tokens == MASK).any()


def test_original_topk_can_leave_fewer_masks_than_its_quota():
    """A fixed position scored by a poor fresh candidate takes a keep-masked place: fewer than k stay masked."""
    vocab, mask = 6, 5

    def denoiser(tokens):  # certain of token 2 where masked, unsure where fixed (no shift)
        logits = torch.zeros(tokens.shape[0], tokens.shape[1], vocab)
        logits[..., 2] = torch.where(tokens == mask, 8.0, 0.5)
        logits[..., 2] += torch.arange(tokens.shape[1]) * 0.1  # later positions slightly more confident
        return logits

    ids = torch.full((1, 4), mask)
    config = SamplingConfig(steps=4, strategy="topk", greedy=True, temperature=1.0, top_p=None, shift=False,
                            record_history=True)
    counts = [int((h == mask).sum()) for h in sample(denoiser, ids, mask, config).history]
    # t=3: k=3, all masked and equally certain up to the ramp -> the most confident (col 3) is fixed: 3 left.
    # t=2: k=2, the fixed col 3 now scores lowest and takes one of the two places -> only col 0 stays: 1 left.
    # t=1: k=1, a fixed column is the single keep-masked place -> col 0 is fixed and the run ends a step early.
    assert counts == [4, 3, 1, 0]
    confidence = SamplingConfig(**{**config.__dict__, "strategy": "confidence"})
    assert [int((h == mask).sum()) for h in sample(denoiser, ids, mask, confidence).history] == [4, 3, 2, 1, 0]


def test_confidence_keeps_floor_n_t_over_T_least_confident_masked():
    step = _step([True, True, True, True, False], [0.9, 0.05, 0.6, 0.1, 1.0])
    # keep floor(4 * 2 / 4) = 2 least confident masked (0.05, 0.1); fix the other two
    assert lowest_confidence_kept(step).tolist() == [[True, False, True, False, False]]


def test_original_topk_ranks_fixed_positions_too():
    step = _step([True, True, True, False], [0.9, 0.8, 0.7, 0.1], maskable=[True, True, True, True])
    # k = floor(4 * 2 / 4) = 2: the two lowest of all four are col 3 (fixed) and col 2, so only col 2 stays
    assert original_topk(step).tolist() == [[True, True, False, False]]


def test_threshold_fixes_the_confident_and_at_least_one():
    assert confidence_threshold(_step([True, True, True], [0.95, 0.5, 0.91], threshold=0.9)).tolist() == \
        [[True, False, True]]
    assert confidence_threshold(_step([True, True, False], [0.3, 0.5, 0.99], threshold=0.9)).tolist() == \
        [[False, True, False]]


def test_factor_fixes_the_longest_passing_prefix():
    # sorted 0.9, 0.7, 0.6: 0.9 >= 1 - 1/2, 0.7 >= 1 - 1/3, 0.6 < 1 - 1/4 -> two fixed
    assert confidence_factor(_step([True, True, True], [0.6, 0.9, 0.7], factor=1.0)).tolist() == [[False, True, True]]
    assert confidence_factor(_step([True, True], [0.1, 0.2], factor=1.0)).tolist() == [[False, True]]


def test_eb_fixes_the_lowest_entropy_prefix_within_the_budget():
    entropy = [0.3, 0.05, 0.02, 2.0]
    step = _step([True, True, True, True], [0.5] * 4, entropy=entropy, eb_gamma=0.1)
    # ascending 0.02, 0.05, 0.3, 2.0: the sums minus the maxima are 0, 0.02, 0.07, 0.37 -> three fixed
    assert entropy_bounded(step).tolist() == [[True, True, True, False]]
    assert entropy_bounded(_step([True, True], [0.5] * 2, entropy=[5.0, 6.0], eb_gamma=0.0)).tolist() == [[True, False]]


def test_a_custom_rule_is_one_function(model):
    def left_to_right(step: Step) -> torch.Tensor:
        first = step.masked.float().argmax(dim=1)
        fix = torch.zeros_like(step.masked)
        fix[torch.arange(step.masked.shape[0]), first] = True
        return fix & step.masked

    ids, src = prefixed([3])
    out = sample(model, ids, MASK, SamplingConfig(steps=4, strategy=left_to_right, record_history=True), src_mask=src)
    assert not (out.tokens == MASK).any()
    assert (out.history[1] != MASK).sum() == 4  # the prefix plus exactly one fixed token


def test_nucleus_filter_keeps_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(nucleus_filter(logits, 0.7))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(nucleus_filter(logits, 1.0)).all()
    assert torch.isfinite(nucleus_filter(logits, 0.01)).sum() == 1


def test_nucleus_fast_path_equals_full_sort_on_flat_and_peaked_rows():
    torch.manual_seed(0)
    logits = torch.cat([torch.randn(4, 3000) * 0.1, torch.randn(4, 3000) * 8])  # flat rows, peaked rows
    fast = torch.isfinite(nucleus_filter(logits, 0.9))
    probs = logits.softmax(-1)
    ordered, order = probs.sort(dim=-1, descending=True)
    keep_sorted = (ordered.cumsum(-1) - ordered) < 0.9
    reference = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    assert torch.equal(fast, reference)
    assert NUCLEUS_FAST_K < fast[:4].sum(-1).min() and fast[4:].sum(-1).max() < NUCLEUS_FAST_K


def test_draws_follow_the_tempered_distribution_and_skip_the_mask_and_suppressed_tokens():
    probs = torch.tensor([0.1, 0.6, 0.3, 0.0, 0.2])
    logits = probs.clamp_min(1e-30).log().repeat(20_000, 1)
    rows = torch.zeros(20_000, dtype=torch.long)
    config = SamplingConfig(temperature=1.0, top_p=None, suppress_tokens=(4,))
    proposal = propose(logits, config, [torch.Generator().manual_seed(0)], rows, mask_id=1)
    freq = torch.bincount(proposal.tokens, minlength=5).float() / 20_000
    assert freq[1] == 0 and freq[3] == 0 and freq[4] == 0
    assert torch.allclose(freq, torch.tensor([0.25, 0.0, 0.75, 0.0, 0.0]), atol=0.015)
    assert torch.allclose(proposal.confidence, torch.log(torch.tensor([0.25, 1.0, 0.75, 1.0, 1.0]))[proposal.tokens],
                          atol=1e-5)


def test_confidence_measures_and_top_k():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).log_softmax(-1)
    probs = logits.exp()[0]
    rows = torch.zeros(1, dtype=torch.long)

    def measure(name, **extra):
        config = SamplingConfig(temperature=0.0, top_p=None, confidence=name, **extra)
        return propose(logits, config, [None], rows, mask_id=3, with_entropy=True)

    kept = probs[:3] / probs[:3].sum()  # the mask (id 3) is never proposed
    assert measure("prob").confidence.exp().item() == pytest.approx(kept[0].item(), rel=1e-5)
    assert measure("margin").confidence.exp().item() == pytest.approx((kept[0] - kept[1]).item(), rel=1e-5)
    entropy = -(kept * kept.log()).sum()
    assert measure("entropy").confidence.item() == pytest.approx(-entropy.item(), rel=1e-5)
    assert measure("prob").entropy.item() == pytest.approx(entropy.item(), rel=1e-5)
    two = probs[:2] / probs[:2].sum()
    assert measure("prob", top_k=2).confidence.exp().item() == pytest.approx(two[0].item(), rel=1e-5)


def test_works_with_llama_and_unshifted():
    llama = DiffusionLM(tiny_llama(VOCAB), SpecialTokens(mask_id=MASK), shift=False)
    ids = torch.full((1, 10), MASK)
    out = sample(llama, ids, MASK, SamplingConfig(steps=3, shift=False), generator=torch.Generator().manual_seed(0))
    assert not (out.tokens == MASK).any()


@pytest.mark.parametrize("bad, message", [
    (dict(steps=0), "diffusion_steps must be >= 1, got 0"),
    (dict(temperature=-0.5), "logits_temp must be >= 0 (0 means argmax), got -0.5"),
    (dict(top_p=1.5), "topp_temp must be in (0, 1], got 1.5"),
    (dict(top_k=0), "top_k must be >= 1, got 0"),
    (dict(strategy="nope"), "unknown decoding_strategy 'nope'"),
    (dict(confidence="loud"), "unknown confidence 'loud'"),
    (dict(threshold=0.0), "threshold must be in (0, 1], got 0.0"),
    (dict(threshold=1.2), "threshold must be in (0, 1], got 1.2"),
    (dict(factor=0.0), "factor must be > 0, got 0.0"),
    (dict(eb_gamma=-1.0), "eb_gamma must be >= 0, got -1.0"),
    (dict(block_length=0), "block_length must be >= 1, got 0"),
    (dict(cache="full"), "unknown cache 'full'"),
    (dict(cache_refresh=0), "cache_refresh must be >= 1"),
    (dict(steps=3, block_length=4), "steps=3 is fewer than the blocks a row needs: block_length=4"),
])
def test_bad_settings_fail_clearly(model, bad, message):
    ids, src = prefixed([2])
    with pytest.raises(UserInputError) as error:
        sample(model, ids, MASK, SamplingConfig(**bad), src_mask=src)
    assert str(error.value).startswith(message)


def test_a_cache_with_an_annealing_mask_is_refused(model):
    ids, src = prefixed([2])
    annealing = torch.zeros(1, 1, ids.shape[1], ids.shape[1])
    with pytest.raises(UserInputError, match="cache='prefix' cannot be used with a 4D \\(annealing\\) attention mask"):
        sample(model, ids, MASK, SamplingConfig(cache="prefix"), src_mask=src, attention_mask=annealing)
    out = sample(model, ids, MASK, SamplingConfig(steps=4), src_mask=src, attention_mask=annealing,
                 generator=_seeded([0]))
    assert not (out.tokens == MASK).any()


def test_padding_width_does_not_change_a_row(model):
    ids, src = prefixed([4], length=14)
    wide = torch.cat([ids, torch.full((1, 6), 3)], dim=1)
    keep = torch.cat([torch.ones(1, 14), torch.zeros(1, 6)], dim=1).long()
    config = SamplingConfig(steps=6)
    narrow = sample(model, ids, MASK, config, src_mask=src, generator=_seeded([3])).tokens
    padded = sample(model, wide, MASK, config, src_mask=torch.cat([src, torch.zeros(1, 6, dtype=torch.bool)], 1),
                    attention_mask=keep, generator=_seeded([3])).tokens
    assert torch.equal(narrow[0], padded[0, :14]) and torch.equal(padded[0, 14:], wide[0, 14:])


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_rows_starting_at_other_columns_or_with_nothing_to_generate_equal_single_runs(model, cache):
    ids, src = prefixed([2, 5, 20, 9])  # the third row is given entirely
    config = SamplingConfig(steps=8, block_length=4, strategy="threshold", cache=cache)
    batched = sample(model, ids, MASK, config, src_mask=src, generator=_seeded([1, 2, 3, 4]))
    assert torch.equal(batched.tokens[2], ids[2]) and batched.nfe[2] == 0
    for row in (0, 1, 3):
        single = sample(model, ids[row : row + 1], MASK, config, src_mask=src[row : row + 1], generator=_seeded([row + 1]))
        assert torch.equal(single.tokens[0], batched.tokens[row]) and single.nfe[0] == batched.nfe[row]
