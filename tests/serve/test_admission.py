"""Rows joining a running reverse loop between steps give what they give alone (ddm.sampling.begin/admit)."""

from __future__ import annotations

import pytest
import torch

from llamafactory.ddm import DiffusionLM, SamplingConfig, SpecialTokens, sample
from llamafactory.ddm.sampling import begin
from tests.tiny import tiny_gpt2

VOCAB, MASK = 64, 63


def tiny_diffusion_lm() -> DiffusionLM:
    torch.manual_seed(0)
    return DiffusionLM(tiny_gpt2(VOCAB), SpecialTokens(mask_id=MASK, bos_id=0)).eval()


def _row(model, length: int, prompt: int, seed: int):
    ids = torch.randint(3, 60, (1, length), generator=torch.Generator().manual_seed(seed))
    given = torch.zeros_like(ids, dtype=torch.bool)
    given[:, :prompt] = True
    return ids, given, torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("settings", [dict(temperature=0.0), dict(temperature=1.0, strategy="confidence", confidence="margin"),
                                      dict(block_length=4, strategy="random")])
def test_late_rows_match_their_runs_alone(settings):
    model = tiny_diffusion_lm()
    config = SamplingConfig(steps=8, top_p=None, **settings)
    rows = [_row(model, 16, 3, seed) for seed in (1, 2, 3)]
    alone = [sample(model, ids, model.mask_id, config, src_mask=given, generator=[gen]).tokens
             for ids, given, gen in (_row(model, 16, 3, seed) for seed in (1, 2, 3))]
    ids, given, gen = rows[0]
    state = begin(model, ids, model.mask_id, config, src_mask=given, generator=[gen])
    assert state.step() and state.step()
    joined = 0
    for number, (ids, given, gen) in enumerate(rows[1:], start=1):
        late = begin(model, ids, model.mask_id, config, src_mask=given, generator=[gen])
        if state.joinable(late):
            assert state.admit(late) == state.final.shape[0] - 1
            joined += 1
        else:  # blocks: a row joins only a batch in its own block
            while late.step():
                pass
            assert torch.equal(late.final, alone[number])
        state.step()
    while state.step():
        pass
    assert joined == (0 if "block_length" in settings else 2)
    for number in range(joined + 1):
        assert torch.equal(state.final[number : number + 1], alone[number])


def test_release_renumbers_the_rows_left():
    model = tiny_diffusion_lm()
    config = SamplingConfig(steps=6, temperature=0.0, strategy="confidence")
    ids = torch.randint(3, 60, (3, 12), generator=torch.Generator().manual_seed(0))
    given = torch.zeros_like(ids, dtype=torch.bool)
    given[:, :2] = True
    whole = sample(model, ids, model.mask_id, config, src_mask=given).tokens
    state = begin(model, ids, model.mask_id, config, src_mask=given)
    state.step()
    state.release([0])
    assert state.final.shape[0] == 2 and state.rows.tolist() == [0, 1]
    while state.step():
        pass
    assert torch.equal(state.final, whole[1:])
