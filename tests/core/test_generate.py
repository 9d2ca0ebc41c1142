"""Fast generation (docs/design.md#fast-generation): blocks, rules and caches are batch-correct; caches are
right where they must be exact; EOS stops rows early without changing them; ``generate``'s API."""

import pytest
import torch

from llamafactory.ddm import STRATEGIES, DiffusionLM, GenerateOutput, SamplingConfig, SpecialTokens, generate, sample
from llamafactory.errors import UserInputError
from tests.tiny import tiny_gpt2, tiny_llama

VOCAB, MASK, BOS = 48, 5, 0
LENGTHS = [1, 2, 3, 4, 5, 6, 7, 8]  # prompt lengths of the mixed batch


def _separated(model) -> DiffusionLM:
    """Logits scaled 30x, so greedy choices are far from ties on any CPU and batch shape."""
    norm = model.transformer.ln_f if hasattr(model, "transformer") else model.model.norm
    with torch.no_grad():
        norm.weight.mul_(30.0)
    return model


def _model(arch: str = "gpt2", shift: bool = True, attention: str = "sdpa", layers: int = 2) -> DiffusionLM:
    if arch == "gpt2":
        causal = tiny_gpt2(VOCAB, n_positions=128, n_layer=layers, attn_implementation=attention)
    else:
        causal = tiny_llama(VOCAB, num_hidden_layers=layers, attn_implementation=attention)
    return DiffusionLM(_separated(causal), SpecialTokens(mask_id=MASK, bos_id=BOS, eos_id=1, pad_id=2), shift=shift).eval()


@pytest.fixture(scope="module")
def gpt2() -> DiffusionLM:
    return _model()


def _prompts(lengths=LENGTHS) -> list[list[int]]:
    return [[BOS] + torch.randint(6, VOCAB, (n - 1,), generator=torch.Generator().manual_seed(n)).tolist()
            for n in lengths]


def _left_padded(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), 2)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def _seeded(seeds) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("greedy", [True, False], ids=["greedy", "sampled"])
@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_a_batch_of_mixed_prompts_equals_single_runs(gpt2, strategy, cache, greedy):
    prompts = _prompts()
    ids, mask = _left_padded(prompts)
    settings = dict(max_new_tokens=12, steps=12, block_length=4, strategy=strategy, cache=cache, top_p=None,
                    temperature=0.0 if greedy else 1.0, return_dict=True)
    batch = generate(gpt2, ids, mask, generator=_seeded(range(8)), **settings)
    for row, prompt in enumerate(prompts):
        single = generate(gpt2, torch.tensor([prompt]), generator=_seeded([row]), **settings)
        assert single.sequences[0].tolist() == batch.sequences[row, ids.shape[1] - len(prompt) :].tolist()
        assert single.nfe[0] == batch.nfe[row]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("shift", [True, False])
def test_caches_refreshed_every_step_give_the_tokens_of_no_cache(arch, attention, shift):
    model = _model(arch, shift, attention)
    ids, mask = _left_padded(_prompts([7, 3, 5, 1]))
    settings = dict(max_new_tokens=16, steps=16, block_length=4, strategy="confidence", temperature=0.0, top_p=None)
    reference = generate(model, ids, mask, **settings)
    for cache in ("prefix", "dual"):
        assert torch.equal(generate(model, ids, mask, cache=cache, cache_refresh=1, **settings), reference), cache


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("shift", [True, False])
@pytest.mark.parametrize("strategy", ["confidence", "threshold"])
def test_with_one_layer_the_caches_are_exact(arch, shift, strategy):
    """One layer's keys and values depend on nothing but their own token and position, so a cache that never
    refreshes must still equal no cache: this checks the windows, the column order and the position ids."""
    model = _model(arch, shift, layers=1)
    ids, mask = _left_padded(_prompts([7, 3, 5, 1]))
    settings = dict(max_new_tokens=16, steps=16, block_length=4, strategy=strategy, temperature=0.0, top_p=None)
    reference = generate(model, ids, mask, **settings)
    for cache in ("prefix", "dual"):
        assert torch.equal(generate(model, ids, mask, cache=cache, **settings), reference), cache


def test_an_approximate_cache_stays_close_and_costs_the_same_number_of_steps(gpt2):
    ids, mask = _left_padded(_prompts())
    settings = dict(max_new_tokens=16, steps=16, block_length=4, strategy="confidence", temperature=0.0, top_p=None,
                    return_dict=True)
    reference = generate(gpt2, ids, mask, **settings)
    for cache in ("prefix", "dual"):
        cached = generate(gpt2, ids, mask, cache=cache, **settings)
        assert torch.equal(cached.nfe, reference.nfe)
        assert (cached.sequences == reference.sequences).float().mean() > 0.8


def test_blocks_fill_left_to_right(gpt2):
    ids, mask = _left_padded(_prompts([3]))
    out = generate(gpt2, ids, mask, max_new_tokens=12, steps=12, block_length=4, strategy="random",
                   generator=_seeded([0]), output_history=True, return_dict=True)
    for state in out.history:
        masked = (state[0, 3:] == MASK).view(3, 4)
        started = masked.logical_not().any(dim=1)
        # a block starts only once every block before it is complete
        assert all(not started[k] or not masked[:k].any() for k in range(3))


def test_eos_stops_rows_early_shrinks_the_batch_and_keeps_the_text():
    model = _model()
    prompts = _prompts()
    ids, mask = _left_padded(prompts)
    settings = dict(max_new_tokens=16, steps=16, block_length=4, strategy="confidence", temperature=0.0, top_p=None)
    full = generate(model, ids, mask, **settings)
    generated = full[:, ids.shape[1] :]
    # make EOS the token the model most often writes in the first half, so rows end at different places
    eos = int(torch.mode(generated[:, :8].flatten()).values)
    model.tokens = SpecialTokens(mask_id=MASK, bos_id=BOS, eos_id=eos, pad_id=2)
    batch_sizes = []
    hook = model.causal_lm().register_forward_pre_hook(lambda _, args, kwargs: batch_sizes.append(
        kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        stopped = generate(model, ids, mask, stop_at_eos=True, return_dict=True, **settings)
    finally:
        hook.remove()
    ended = 0
    for row in range(len(prompts)):
        tokens = generated[row].tolist()
        if eos not in tokens:
            assert stopped.sequences[row].tolist() == full[row].tolist()
            continue
        ended += 1
        cut = tokens.index(eos)
        kept = stopped.sequences[row, ids.shape[1] :].tolist()
        assert kept[: cut + 1] == tokens[: cut + 1]  # the same text up to and including the EOS
        assert set(kept[cut + 1 :]) <= {2}  # padding after it
    assert ended >= 2
    assert batch_sizes[0] == len(prompts) and min(batch_sizes) < len(prompts)
    assert int(stopped.nfe.sum()) < 16 * len(prompts)


def test_generate_returns_prompt_and_generation_and_takes_the_peers_names(gpt2):
    ids, mask = _left_padded(_prompts([2, 5]))
    ours = generate(gpt2, ids, mask, max_new_tokens=8, steps=8, block_length=4, strategy="confidence",
                    confidence="margin", temperature=0.0, top_p=None)
    assert ours.shape == (2, ids.shape[1] + 8) and torch.equal(ours[:, : ids.shape[1]], ids)
    assert not (ours == MASK).any()
    dream = generate(gpt2, ids, mask, gen_length=8, steps=8, block_size=4, alg="topk_margin", temperature=0.0,
                     top_p=None)
    assert torch.equal(dream, generate(gpt2, ids, mask, max_new_tokens=8, steps=8, block_length=4,
                                       strategy="confidence", confidence="margin", schedule="dream",
                                       confidence_distribution="full", temperature=0.0, top_p=None))
    llada = generate(gpt2, ids, mask, gen_length=8, steps=8, block_length=4, remasking="low_confidence",
                     temperature=0.0, top_p=None)
    assert torch.equal(llada, generate(gpt2, ids, mask, max_new_tokens=8, steps=8, block_length=4,
                                       strategy="confidence", schedule="llada", confidence_distribution="full",
                                       greedy=True, top_p=None))
    out = generate(gpt2, ids, mask, max_new_tokens=8, steps=8, return_dict=True, output_history=True,
                   generator=_seeded([0, 1]))
    assert isinstance(out, GenerateOutput) and out.nfe.tolist() == [8, 8] and len(out.history) == 9


def test_generate_is_the_sampler_on_a_left_padded_layout(gpt2):
    prompt = _prompts([4])[0]
    ids = torch.tensor([prompt + [MASK] * 6])
    given = torch.zeros_like(ids, dtype=torch.bool)
    given[:, :4] = True
    config = SamplingConfig(steps=6, block_length=3, strategy="threshold", cache="dual")
    expected = sample(gpt2, ids, MASK, config, src_mask=given, generator=_seeded([3])).tokens
    got = generate(gpt2, torch.tensor([prompt]), max_new_tokens=6, steps=6, block_length=3, strategy="threshold",
                   cache="dual", generator=_seeded([3]))
    assert torch.equal(got, expected)


@pytest.mark.parametrize("call, message", [
    (dict(max_new_tokens=8, threshold=1.5), "threshold must be in (0, 1], got 1.5"),
    (dict(max_new_tokens=8, alg="sorted"), "unknown alg 'sorted'; expected one of origin, maskgit_plus"),
    (dict(max_new_tokens=8, remasking="lowest"), "unknown remasking 'lowest'"),
    (dict(max_new_tokens=8, alg="entropy", confidence="prob"), "alg='entropy' means confidence='entropy'"),
    (dict(max_new_tokens=8, gen_length=6), "max_new_tokens=8 and its alias gen_length=6 disagree"),
    (dict(max_new_tokens=8, block_length=4, block_size=2), "block_length=4 and its alias block_size=2 disagree"),
    (dict(), "max_new_tokens (gen_length) must be >= 1, got None"),
    (dict(max_new_tokens=200), "exceeds the model's 128 positions"),
    (dict(max_new_tokens=8, steps=1, block_length=4), "steps=1 is fewer than the blocks a row needs"),
])
def test_bad_generate_settings_fail_clearly(gpt2, call, message):
    ids, mask = _left_padded(_prompts([2, 3]))
    with pytest.raises(UserInputError) as error:
        generate(gpt2, ids, mask, **call)
    assert message in str(error.value)


def test_right_padded_prompts_are_refused(gpt2):
    ids = torch.tensor([[BOS, 7, 2], [BOS, 8, 9]])
    with pytest.raises(UserInputError, match="left-padded"):
        generate(gpt2, ids, torch.tensor([[1, 1, 0], [1, 1, 1]]), max_new_tokens=4)


def test_stop_at_eos_needs_an_eos_token():
    model = DiffusionLM(tiny_gpt2(VOCAB), SpecialTokens(mask_id=MASK, bos_id=BOS)).eval()
    with pytest.raises(UserInputError, match="stop_at_eos needs the model's EOS token"):
        generate(model, torch.tensor([[BOS]]), max_new_tokens=4, stop_at_eos=True)
