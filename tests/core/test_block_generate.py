"""Generation of a block-diffusion model (docs/design.md#block-diffusion): blocks follow position ids, the exact
key/value cache (``cache="block"``) gives the tokens of recomputing the whole block-causal sequence each step,
every row equals its run alone, and mismatched settings fail with one line before any work."""

import pytest
import torch

from llamafactory.ddm import STRATEGIES, DiffusionLM, SpecialTokens, generate
from llamafactory.errors import UserInputError
from tests.core.test_generate import BOS, MASK, VOCAB, _left_padded, _prompts, _seeded, _separated
from tests.tiny import tiny_gpt2, tiny_llama

BLOCK = 4
LENGTHS = [1, 4, 6, 9]  # prompts ending inside, at the end of, and before a block boundary
NEW = 10


def _model(arch: str, shift: bool = True, block_size: int | None = BLOCK, eos_id: int = 1) -> DiffusionLM:
    causal = tiny_gpt2(VOCAB, n_positions=128) if arch == "gpt2" else tiny_llama(VOCAB)
    return DiffusionLM(_separated(causal), SpecialTokens(mask_id=MASK, bos_id=BOS, eos_id=eos_id, pad_id=2),
                       shift=shift, block_size=block_size).eval()


@pytest.fixture(scope="module", params=["gpt2", pytest.param("llama", marks=pytest.mark.slow)])
def block_model(request) -> DiffusionLM:
    return _model(request.param)


def _run(model, prompts, seeds, **settings):
    ids, mask = _left_padded(prompts)
    settings = {"max_new_tokens": NEW, "steps": NEW, "temperature": 0.0, **settings}
    return generate(model, ids, mask, generator=_seeded(seeds), return_dict=True, **settings)


def _rows(output, prompts) -> list[list[int]]:
    """Each row's prompt and generation, padding removed."""
    width = output.sequences.shape[1]
    return [output.sequences[i, width - len(p) - NEW :].tolist() for i, p in enumerate(prompts)]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_exact_cache_gives_the_tokens_of_recomputing_and_of_each_row_alone(block_model, strategy):
    prompts, seeds = _prompts(LENGTHS), range(len(LENGTHS))
    cached = _run(block_model, prompts, seeds, strategy=strategy, cache="block")
    recomputed = _run(block_model, prompts, seeds, strategy=strategy, cache="none")
    assert _rows(cached, prompts) == _rows(recomputed, prompts)
    assert cached.nfe.tolist() == recomputed.nfe.tolist()
    for row, (prompt, seed) in enumerate(zip(prompts, seeds)):
        alone = _run(block_model, [prompt], [seed], strategy=strategy)  # cache "auto": the exact cache
        assert _rows(alone, [prompt])[0] == _rows(cached, prompts)[row]
        assert int(alone.nfe[0]) == int(cached.nfe[row])


@pytest.mark.slow
@pytest.mark.parametrize("shift", [True, False], ids=["shift", "no-shift"])
def test_no_shift_and_longer_sampler_blocks_are_exact_too(shift):
    model = _model("gpt2", shift=shift)
    prompts = _prompts(LENGTHS)
    for block_length in (BLOCK, 2 * BLOCK):
        runs = [_run(model, prompts, range(len(LENGTHS)), strategy="confidence", block_length=block_length, cache=cache)
                for cache in ("block", "none")]
        assert _rows(runs[0], prompts) == _rows(runs[1], prompts)


def test_blocks_follow_position_ids_and_the_step_budget_is_split_over_them(block_model):
    """A prompt of 6 tokens ends inside block 1: 10 masks fill columns 6..15, i.e. blocks 1 (2 masks), 2 and 3
    (4 each); 10 steps give them 2, 4 and 4 steps, and under the quota rule each step fixes one token, so
    every block is finished before a mask of the next one is fixed."""
    prompt = _prompts([6])
    output = generate(block_model, torch.tensor(prompt), max_new_tokens=NEW, steps=NEW, strategy="confidence",
                      temperature=0.0, output_history=True, return_dict=True)
    assert output.nfe.tolist() == [NEW]
    fixed_at = [next(step for step, h in enumerate(output.history) if h[0, col] != MASK) for col in range(6, 16)]
    assert [sorted(fixed_at[:2]), sorted(fixed_at[2:6]), sorted(fixed_at[6:])] == [[1, 2], [3, 4, 5, 6], [7, 8, 9, 10]]


def test_each_cached_step_runs_only_the_block_and_each_block_is_written_once():
    model = _model("gpt2")
    widths: list[int] = []
    hook = model.causal_lm().register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        generate(model, torch.tensor(_prompts([6])), max_new_tokens=NEW, steps=NEW, strategy="confidence",
                 temperature=0.0)
    finally:
        hook.remove()
    # blocks 1..3 take 2 + 4 + 4 steps of 4 columns; writes: the prompt's block 0 (4 columns), blocks 1 and 2
    assert widths == [4] + [4] * 2 + [4] + [4] * 4 + [4] + [4] * 4
    assert sum(widths) == 4 * (NEW + 3)


def test_stop_at_eos_ends_a_row_at_its_eos_and_the_cache_agrees():
    prompts = _prompts(LENGTHS)
    free = _rows(_run(_model("gpt2"), prompts, range(len(LENGTHS)), strategy="confidence"), prompts)
    eos = free[0][len(prompts[0]) + 3]  # a token the first row fixes in its 4th generated position
    model = _model("gpt2", eos_id=eos)
    runs = [_run(model, prompts, range(len(LENGTHS)), strategy="confidence", stop_at_eos=True, cache=cache)
            for cache in ("block", "none")]
    assert _rows(runs[0], prompts) == _rows(runs[1], prompts)
    assert runs[0].nfe.tolist() == runs[1].nfe.tolist()
    row = _rows(runs[0], prompts)[0]
    end = row.index(eos, len(prompts[0]))
    assert set(row[end + 1 :]) <= {2} and end + 1 < len(row)
    assert int(runs[0].nfe[0]) < NEW


def test_a_full_sequence_model_keeps_its_default_loop():
    model = _model("gpt2", block_size=None)
    prompts = _prompts(LENGTHS)
    default = _run(model, prompts, range(len(LENGTHS)), strategy="confidence", block_length=BLOCK)
    explicit = _run(model, prompts, range(len(LENGTHS)), strategy="confidence", block_length=BLOCK, cache="none")
    assert torch.equal(default.sequences, explicit.sequences)


@pytest.mark.parametrize(("block_size", "settings", "message"), [
    (BLOCK, {"block_length": 6}, "block_length=6 must be a multiple of the model's block_size=4"),
    (BLOCK, {"cache": "dual"}, "cache='dual' approximates a full-sequence model"),
    (BLOCK, {"cache": "prefix"}, "cache='prefix' approximates a full-sequence model"),
    (None, {"cache": "block"}, "cache='block' is the exact cache of a block model"),
])
def test_settings_that_do_not_fit_the_model_fail_before_any_work(block_size, settings, message):
    model = _model("gpt2", block_size=block_size)
    calls = []
    hook = model.causal_lm().register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(UserInputError, match=message.replace("(", r"\(")):
            generate(model, torch.tensor(_prompts([3])), max_new_tokens=4, steps=4, **settings)
    finally:
        hook.remove()
    assert not calls
