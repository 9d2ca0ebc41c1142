"""LLaDA's and Dream's names give LLaDA's and Dream's decisions (docs/design.md#fast-generation).

Each peer rule is re-stated here as a small standalone loop written from the peer's published definition
(its transfer schedule, its confidence over the full softmax with the mask token never proposed), run on
a tiny random model with the project's logits alignment, and compared token for token and NFE for NFE
with ``generate`` under the peer's spelling (greedy).
"""

import math

import pytest
import torch
from transformers import DynamicCache

from llamafactory.ddm import DiffusionLM, SamplingConfig, SpecialTokens, Step, generate
from llamafactory.ddm.proposals import propose
from llamafactory.ddm.strategies import SCHEDULES
from llamafactory.errors import UserInputError
from tests.tiny import tiny_gpt2

VOCAB, MASK, BOS, PAD = 48, 5, 0, 2


@pytest.fixture(scope="module")
def model() -> DiffusionLM:
    causal = tiny_gpt2(VOCAB, n_positions=128)
    return DiffusionLM(causal, SpecialTokens(mask_id=MASK, bos_id=BOS, eos_id=1, pad_id=PAD)).eval()


def _prompts(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts starting with BOS."""
    width = max(lengths)
    ids, padding = torch.full((len(lengths), width), PAD), torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, width - n :] = torch.tensor([BOS] + torch.randint(6, VOCAB, (n - 1,),
                                                                   generator=torch.Generator().manual_seed(n)).tolist())
        padding[row, width - n :] = 1
    return ids, padding


def _aligned_logits(model: DiffusionLM, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """Logits where row i predicts token i: positions counted over real tokens, the output at i - 1 moved to i."""
    positions = (padding.cumsum(dim=1) - 1).clamp(min=0)
    out = model.causal_lm()(input_ids=x, attention_mask=padding, position_ids=positions).logits
    return torch.cat([out[:, :1], out[:, :-1]], dim=1)


def _greedy_candidates(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-softmax probabilities (mask included, float64) and the argmax with the mask token excluded."""
    probs = logits.double().softmax(dim=-1)
    return probs, logits.masked_fill(torch.arange(VOCAB) == MASK, -math.inf).argmax(dim=-1)


def llada_counts(n: int, steps: int) -> list[int]:
    """LLaDA's tokens per step of a block: n spread evenly, the remainder one each on the first steps."""
    return [n // steps + (1 if i < n % steps else 0) for i in range(steps)]


def llada_reference(model, prompt, padding, gen_length, steps, block_length) -> tuple[torch.Tensor, int]:
    """LLaDA's semi-autoregressive low-confidence remasking, greedy: per block and step, fix the scheduled
    number of masked positions with the highest full-softmax probability of their argmax."""
    x = torch.cat([prompt, torch.full((prompt.shape[0], gen_length), MASK)], dim=1)
    padding = torch.cat([padding, torch.ones(prompt.shape[0], gen_length, dtype=torch.long)], dim=1)
    blocks, nfe = gen_length // block_length, 0
    for b in range(blocks):
        end = prompt.shape[1] + (b + 1) * block_length
        counts = [llada_counts(int(n), steps // blocks) for n in (x[:, end - block_length : end] == MASK).sum(1)]
        for i in range(steps // blocks):
            masked = x == MASK
            probs, x0 = _greedy_candidates(_aligned_logits(model, x, padding))
            confidence = probs.gather(-1, x0[..., None]).squeeze(-1)
            confidence[:, end:] = -math.inf
            confidence = torch.where(masked, confidence, -math.inf)
            for row in range(x.shape[0]):
                chosen = confidence[row].topk(counts[row][i]).indices
                x[row, chosen] = x0[row, chosen]
            nfe += 1
    return x, nfe


def dream_counts(masks_left: int, i: int, steps: int, eps: float = 1e-3) -> int:
    """Dream's tokens at step i: int(m (1 - s / t)) of the m masks left on the grid linspace(1, eps, steps + 1),
    every remaining one at the last step."""
    if i == steps - 1:
        return masks_left
    grid = torch.linspace(1, eps, steps + 1)
    return int(torch.tensor(float(masks_left)) * (1 - grid[i + 1] / grid[i]))


def dream_reference(model, prompt, padding, gen_length, steps, alg) -> tuple[torch.Tensor, int]:
    """Dream's sampler, greedy: per step, fix the scheduled number of masked positions ranked by the full
    softmax (maskgit_plus: the argmax's probability; topk_margin: top-1 minus top-2 of the proposable
    tokens; entropy: minus the entropy)."""
    x = torch.cat([prompt, torch.full((prompt.shape[0], gen_length), MASK)], dim=1)
    padding = torch.cat([padding, torch.ones(prompt.shape[0], gen_length, dtype=torch.long)], dim=1)
    for i in range(steps):
        masked = x == MASK
        probs, x0 = _greedy_candidates(_aligned_logits(model, x, padding))
        if alg == "maskgit_plus":
            confidence = probs.gather(-1, x0[..., None]).squeeze(-1)
        elif alg == "topk_margin":
            top2 = probs.masked_fill(torch.arange(VOCAB) == MASK, 0.0).topk(2, dim=-1).values
            confidence = top2[..., 0] - top2[..., 1]
        else:
            confidence = (probs * probs.clamp_min(1e-300).log()).sum(dim=-1)
        confidence = torch.where(masked, confidence, -math.inf)
        for row in range(x.shape[0]):
            count = dream_counts(int(masked[row].sum()), i, steps)
            chosen = confidence[row].topk(count).indices
            x[row, chosen] = x0[row, chosen]
    return x, steps


BATCHES = {"one": [4], "left_padded": [3, 6, 1]}


@pytest.mark.parametrize("batch", sorted(BATCHES))
@pytest.mark.parametrize("gen_length, steps, block_length", [(16, 16, 8), (32, 12, 32), (64, 24, 16)])
def test_llada_low_confidence_is_llada(model, batch, gen_length, steps, block_length):
    prompt, padding = _prompts(BATCHES[batch])
    expected, nfe = llada_reference(model, prompt, padding, gen_length, steps, block_length)
    out = generate(model, prompt, padding, gen_length=gen_length, steps=steps, block_length=block_length,
                   remasking="low_confidence", temperature=0.0, top_p=None, return_dict=True)
    real = torch.cat([padding, torch.ones(prompt.shape[0], gen_length, dtype=torch.long)], dim=1).bool()
    assert torch.equal(out.sequences[real], expected[real])
    assert out.nfe.tolist() == [nfe] * prompt.shape[0]


@pytest.mark.parametrize("batch", sorted(BATCHES))
@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
@pytest.mark.parametrize("gen_length, steps", [(8, 8), (12, 5), (32, 16)])
def test_dream_algorithms_are_dream(model, batch, alg, gen_length, steps):
    prompt, padding = _prompts(BATCHES[batch])
    expected, nfe = dream_reference(model, prompt, padding, gen_length, steps, alg)
    out = generate(model, prompt, padding, gen_length=gen_length, steps=steps, alg=alg, temperature=0.0, top_p=None,
                   return_dict=True)
    real = torch.cat([padding, torch.ones(prompt.shape[0], gen_length, dtype=torch.long)], dim=1).bool()
    assert torch.equal(out.sequences[real], expected[real])
    assert out.nfe.tolist() == [nfe] * prompt.shape[0]


@pytest.fixture(scope="module")
def peaked() -> DiffusionLM:
    """The tiny model with its logits scaled up and the mask token's output row (untied) damped, so that
    thresholds of 0.5 and 0.9 fix several tokens at some steps and one at others, while the mask token keeps
    enough mass that the two confidence distributions often disagree."""
    causal = tiny_gpt2(VOCAB, n_positions=128)
    causal.transformer.ln_f.weight.data *= 30
    causal.lm_head.weight = torch.nn.Parameter(causal.lm_head.weight.detach().clone())
    causal.lm_head.weight.data[MASK] *= 0.6
    return DiffusionLM(causal, SpecialTokens(mask_id=MASK, bos_id=BOS, eos_id=1, pad_id=PAD)).eval()


def _window_logits(model: DiffusionLM, x: torch.Tensor, padding: torch.Tensor, keys: DynamicCache,
                   window: torch.Tensor) -> torch.Tensor:
    """Logits of the columns ``window`` run against a copy of the block-start keys and values of every other
    column (attention is bidirectional: the keys' storage order does not matter)."""
    positions = (padding.cumsum(dim=1) - 1).clamp(min=0)
    outside = torch.tensor([c for c in range(x.shape[1]) if c not in set(window.tolist())])
    cache = DynamicCache(ddp_cache_data=[(k[:, :, outside], v[:, :, outside]) for k, v, _ in keys])
    return model.causal_lm()(input_ids=x[:, window], attention_mask=padding[:, torch.cat([outside, window])],
                             position_ids=positions[:, window], cache=cache, use_cache=True).logits


def fast_dllm_dual_cache_reference(model, prompt, padding, gen_length, block_length, threshold):
    """Fast-dLLM's dual-cache threshold decoding with LLaDA's low-confidence order, greedy: at each block
    start one full forward caches every column's keys and values and gives the first step's logits; each
    later step runs only the block (and, under shift, the column before it, whose output predicts the
    block's first token) against that cache. A step fixes the most confident masked position of the block
    and every other one whose full-softmax probability is at least ``threshold``; a row that has filled the
    block waits. Returns the tokens and each row's NFE."""
    x = torch.cat([prompt, torch.full((prompt.shape[0], gen_length), MASK)], dim=1)
    padding = torch.cat([padding, torch.ones(prompt.shape[0], gen_length, dtype=torch.long)], dim=1)
    positions = (padding.cumsum(dim=1) - 1).clamp(min=0)
    nfe = [0] * x.shape[0]
    for start in range(prompt.shape[1], x.shape[1], block_length):
        end = start + block_length
        full = model.causal_lm()(input_ids=x, attention_mask=padding, position_ids=positions, use_cache=True)
        logits, keys = torch.cat([full.logits[:, :1], full.logits[:, :-1]], dim=1)[:, start:end], full.cache
        window = torch.arange(start - 1, end)
        while bool((x[:, start:end] == MASK).any()):
            probs, x0 = _greedy_candidates(logits)
            masked = x[:, start:end] == MASK
            confidence = torch.where(masked, probs.gather(-1, x0[..., None]).squeeze(-1), -math.inf)
            for row in range(x.shape[0]):
                if not bool(masked[row].any()):
                    continue
                order = confidence[row].argsort(descending=True)
                chosen = [int(order[0])] + [int(i) for i in order[1:] if confidence[row, i] >= threshold]
                x[row, start + torch.tensor(chosen)] = x0[row, chosen]
                nfe[row] += 1
            logits = _window_logits(model, x, padding, keys, window)[:, :-1]
    return x, nfe


@pytest.mark.parametrize("batch", sorted(BATCHES))
@pytest.mark.parametrize("threshold", [0.9, 0.5])
def test_fast_dllm_dual_cache_threshold_is_fast_dllm(peaked, batch, threshold):
    prompt, padding = _prompts(BATCHES[batch])
    with torch.no_grad():
        expected, nfe = fast_dllm_dual_cache_reference(peaked, prompt, padding, 64, 16, threshold)
    out = generate(peaked, prompt, padding, gen_length=64, steps=64, block_length=16, remasking="low_confidence",
                   threshold=threshold, cache="dual", temperature=0.0, top_p=None, return_dict=True)
    real = torch.cat([padding, torch.ones(prompt.shape[0], 64, dtype=torch.long)], dim=1).bool()
    assert torch.equal(out.sequences[real], expected[real])
    assert out.nfe.tolist() == nfe
    assert max(nfe) < 64  # some steps fixed several tokens: the threshold was exercised
    ours = generate(peaked, prompt, padding, gen_length=64, steps=64, block_length=16, strategy="threshold",
                    threshold=threshold, cache="dual", temperature=0.0, top_p=None)
    assert not torch.equal(ours[real], expected[real])  # the project's own confidence decides otherwise here


def test_low_confidence_with_two_rules_settings_needs_a_strategy(model):
    prompt, padding = _prompts([4])
    with pytest.raises(UserInputError, match="remasking='low_confidence' with settings of the rules threshold, "
                                             "factor: give strategy= to choose one"):
        generate(model, prompt, padding, gen_length=8, steps=8, remasking="low_confidence", threshold=0.9, factor=1.0)


def _fixed_per_step(schedule: str, n: int, steps: int) -> list[int]:
    """Tokens each step of one block of n masks fixes under ``schedule`` (the last step fixes all left)."""
    left, fixed = n, []
    for t in range(steps - 1, 0, -1):
        masked = torch.zeros(1, n, dtype=torch.bool)
        masked[0, :left] = True
        step = Step(masked=masked, maskable=torch.ones(1, n, dtype=torch.bool), confidence=torch.zeros(1, n),
                    entropy=None, steps_left=torch.tensor([t]), total=torch.tensor([steps]), generators=[None],
                    settings=SamplingConfig(schedule=schedule))
        kept = int(SCHEDULES[schedule](step))
        fixed.append(left - kept)
        left = kept
    return fixed + [left]


@pytest.mark.parametrize("n, steps", [(32, 12), (16, 6), (8, 8), (5, 7)])
def test_schedules_match_their_definitions(n, steps):
    assert _fixed_per_step("llada", n, steps) == llada_counts(n, steps)
    assert _fixed_per_step("linear", n, steps) == [math.floor(n * (t + 1) / steps) - math.floor(n * t / steps)
                                                   for t in range(steps - 1, -1, -1)]
    dream, left = [], n
    for i in range(steps):
        dream.append(dream_counts(left, i, steps))
        left -= dream[-1]
    assert _fixed_per_step("dream", n, steps) == dream


def test_the_schedules_differ_where_the_issue_says():
    assert _fixed_per_step("llada", 32, 12) == [3] * 8 + [2] * 4
    assert _fixed_per_step("linear", 32, 12)[:3] == [3, 3, 2]
    assert _fixed_per_step("dream", 8, 8)[0] == 0  # Dream fixes nothing at its first step when steps = tokens


def test_full_confidence_keeps_the_mask_tokens_mass_but_never_proposes_it():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.5]])  # the mask (id 1) is the most likely token
    rows = torch.zeros(1, dtype=torch.long)
    probs = logits.softmax(-1)[0]
    for distribution, expected in (("proposable", probs[3] / (1 - probs[1])), ("full", probs[3])):
        config = SamplingConfig(temperature=0.0, top_p=None, confidence_distribution=distribution)
        proposal = propose(logits, config, [None], rows, mask_id=1)
        assert proposal.tokens.tolist() == [3]
        assert proposal.confidence.exp().item() == pytest.approx(expected.item(), rel=1e-5)


def test_explicit_settings_win_over_a_peers_defaults(model):
    prompt, padding = _prompts([4])
    ours = generate(model, prompt, padding, max_new_tokens=12, steps=5, strategy="confidence", temperature=0.0,
                    top_p=None)
    assert torch.equal(generate(model, prompt, padding, max_new_tokens=12, steps=5, alg="maskgit_plus",
                                schedule="linear", confidence_distribution="proposable", temperature=0.0,
                                top_p=None), ours)


@pytest.mark.parametrize("bad, message", [
    (dict(schedule="cosine"), "unknown schedule 'cosine'; expected one of linear, llada, dream"),
    (dict(confidence_distribution="all"), "unknown confidence_distribution 'all'; expected one of proposable, full"),
])
def test_bad_peer_settings_fail_clearly(bad, message):
    with pytest.raises(UserInputError, match=message):
        SamplingConfig(**bad).validate()
