"""Corruption, the loss (docs/design.md#objective) and the annealed mask (#attention-mask-annealing)."""

import math

import pytest
import torch
import torch.nn.functional as F

from llamafactory.ddm import (
    anneal_ratio,
    annealed_attention_mask,
    annealed_steps,
    corrupt,
    diffusion_loss,
    sample_noise_level,
    training_loss,
)
from llamafactory.errors import UserInputError
from tests.tiny import tiny_gpt2, tiny_llama

MASK = 7


def test_noise_level_is_in_eps_one():
    t = sample_noise_level(10_000, generator=torch.Generator().manual_seed(0))
    assert t.min() >= 1e-3 and t.max() < 1.0
    assert abs(t.mean().item() - 0.5) < 0.02


def test_corrupt_masks_at_rate_t_and_never_touches_given_tokens():
    ids = torch.randint(10, 50, (4, 2000), generator=torch.Generator().manual_seed(1))
    src = torch.zeros_like(ids, dtype=torch.bool)
    src[:, :300] = True
    t = torch.tensor([0.1, 0.5, 0.9, 1.0])
    noisy, masked = corrupt(ids, t, MASK, src_mask=src, generator=torch.Generator().manual_seed(2))
    assert torch.equal(noisy[src], ids[src])
    assert not masked[src].any()
    assert torch.equal(noisy[masked], torch.full_like(noisy[masked], MASK))
    assert torch.equal(noisy[~masked], ids[~masked])
    rates = masked[:, 300:].float().mean(dim=1)
    assert torch.allclose(rates, t, atol=0.04)


def test_shift_keeps_first_token_given():
    ids = torch.randint(10, 50, (64, 8))
    noisy, masked = corrupt(ids, torch.ones(64), MASK, shift=True)
    assert not masked[:, 0].any() and masked[:, 1:].all()
    _, masked = corrupt(ids, torch.ones(64), MASK, shift=False)
    assert masked.all()


def test_loss_equals_direct_computation():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    ids = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    masked = torch.tensor([[False, True, False, True, True], [False, False, True, False, False]])
    t = torch.tensor([0.5, 0.25])
    out = diffusion_loss(logits, ids, masked, t, shift=True)
    # by hand: output i predicts token i + 1
    terms, plain = [], []
    for b, i in [(0, 1), (0, 3), (0, 4), (1, 2)]:
        ce = F.cross_entropy(logits[b, i - 1][None], ids[b, i][None])
        terms.append(ce / t[b])
        plain.append(ce)
    assert out.num_masked == 4
    assert torch.allclose(out.loss, torch.stack(terms).sum() / 4, atol=1e-6)
    assert torch.allclose(out.unweighted_loss, torch.stack(plain).mean(), atol=1e-6)
    unshifted = diffusion_loss(logits, ids, masked, t, shift=False)
    direct = sum(F.cross_entropy(logits[b, i][None], ids[b, i][None]) / t[b]
                 for b, i in [(0, 1), (0, 3), (0, 4), (1, 2)]) / 4
    assert torch.allclose(unshifted.loss, direct, atol=1e-6)


def test_chunked_loss_matches_unchunked_and_backprops():
    torch.manual_seed(0)
    logits = torch.randn(3, 40, 17, requires_grad=True)
    ids = torch.randint(0, 17, (3, 40))
    masked = torch.rand(3, 40) < 0.5
    t = torch.tensor([0.3, 0.6, 0.9])
    whole = diffusion_loss(logits, ids, masked, t, chunk_size=10_000)
    (grad_whole,) = torch.autograd.grad(whole.loss, logits)
    chunked = diffusion_loss(logits, ids, masked, t, chunk_size=7)
    (grad_chunked,) = torch.autograd.grad(chunked.loss, logits)
    assert torch.allclose(whole.loss, chunked.loss, atol=1e-6)
    assert torch.allclose(grad_whole, grad_chunked, atol=1e-7)


def test_no_masked_token_gives_finite_zero_loss_with_gradient():
    logits = torch.randn(2, 6, 9, requires_grad=True)
    out = diffusion_loss(logits, torch.zeros(2, 6, dtype=torch.long), torch.zeros(2, 6, dtype=torch.bool),
                         torch.tensor([0.5, 0.5]))
    assert torch.isfinite(out.loss) and out.loss.item() == 0.0 and out.num_masked == 0
    out.loss.backward()
    assert logits.grad is not None


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama])
def test_training_loss_gradients_flow_during_and_after_annealing(build):
    model = build(40).train()
    model.config.is_causal = False
    ids = torch.randint(8, 40, (2, 16))
    src = torch.zeros_like(ids, dtype=torch.bool)
    src[:, :4] = True
    for ratio in (0.3, 1.0):
        model.zero_grad()
        out = training_loss(model, ids, MASK, src_mask=src, anneal=ratio, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out.loss) and out.num_masked > 0
        out.loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_training_loss_falls_when_optimised():
    torch.manual_seed(0)
    model = tiny_gpt2(40).train()
    model.config.is_causal = False
    ids = torch.arange(8, 40).repeat(4, 1)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        out = training_loss(model, ids, MASK, generator=generator)
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
        losses.append(out.unweighted_loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_training_loss_runs_in_bfloat16():
    model = tiny_llama(40).to(torch.bfloat16)
    model.config.is_causal = False
    out = training_loss(model, torch.randint(8, 40, (2, 12)), MASK, anneal=0.5)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


def test_anneal_ratio_schedule():
    assert anneal_ratio(0, 10) == pytest.approx(0.1)
    assert anneal_ratio(9, 10) == 1.0
    assert anneal_ratio(500, 10) == 1.0
    assert anneal_ratio(0, 1) == 1.0
    assert anneal_ratio(0, 0) == 1.0
    with pytest.raises(UserInputError, match="anneal_steps must be >= 0"):
        anneal_ratio(0, -1)


@pytest.mark.parametrize(("anneal_steps", "partial"), [(0, 0), (1, 0), (2, 1), (10, 9), (10000, 9999)])
def test_annealed_steps_is_the_count_of_steps_whose_ratio_is_below_one(anneal_steps, partial):
    """0 and 1 both mean "off"; N >= 2 anneals exactly the steps 0 .. N-2 (docs/design.md#attention-mask-annealing)."""
    assert annealed_steps(anneal_steps) == partial
    assert [step for step in range(anneal_steps + 2) if anneal_ratio(step, anneal_steps) < 1] == list(range(partial))


def test_annealed_mask_ratio_zero_is_exactly_causal():
    mask = annealed_attention_mask(32, 0.0)
    allowed = mask[0, 0] == 0
    assert torch.equal(allowed, torch.ones(32, 32, dtype=torch.bool).tril())
    assert mask.shape == (1, 1, 32, 32) and mask.dtype == torch.float32
    assert mask.min().item() == torch.finfo(torch.float32).min


def test_annealed_mask_ratio_one_is_no_mask():
    assert annealed_attention_mask(32, 1.0) is None


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
def test_annealed_mask_opens_future_pairs_at_the_ratio(ratio):
    mask = annealed_attention_mask(256, ratio, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(0))
    allowed = mask[0, 0] == 0
    future = torch.ones(256, 256, dtype=torch.bool).triu(1)
    assert allowed[~future].all()
    assert math.isclose(allowed[future].float().mean().item(), ratio, abs_tol=0.01)
    assert mask.dtype == torch.bfloat16
