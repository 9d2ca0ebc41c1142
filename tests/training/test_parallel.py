"""Parallel-mode selection: aliases, early refusal of impossible set-ups, rank layout."""

from __future__ import annotations

import pytest

from diffullama_training.parallel import Layout, canonical_mode, check_mode
from llamafactory.errors import UserInputError

GOOD = dict(world_size=4, sp_size=2, sample_tokens=2048, attn_implementation="sdpa", anneal_steps=0,
            uses_deepspeed=True, cuda=True, num_heads=32, num_kv_heads=32)


def test_the_original_mode_name_is_an_alias_of_ring_attention():
    assert canonical_mode("dist_flash_attn") == "ring_attn"
    assert [canonical_mode(m) for m in ("data_parallel", "ulysses_attn", "ring_attn")] == [
        "data_parallel", "ulysses_attn", "ring_attn"]
    with pytest.raises(UserInputError, match="expected one of data_parallel, ulysses_attn, ring_attn"):
        canonical_mode("zigzag")


def test_valid_setups_pass():
    check_mode("ulysses_attn", **GOOD)
    check_mode("ring_attn", **GOOD)
    check_mode("data_parallel", **{**GOOD, "sp_size": 1, "uses_deepspeed": False, "anneal_steps": 100})
    check_mode("ulysses_attn", **{**GOOD, "anneal_steps": 1})  # 1 means no annealing, as 0 does


@pytest.mark.parametrize(
    ("mode", "change", "message"),
    [
        ("ring_attn", {"cuda": False}, "need CUDA; on CPU use data_parallel or ulysses_attn"),
        ("ulysses_attn", {"sp_size": 3}, "needs --sp-size of at least 2 dividing the 4 processes \\(got 3"),
        ("ulysses_attn", {"sample_tokens": 2049}, r"multiple of 2 \(e.g. --seq-length 2047\)"),
        ("ring_attn", {"sample_tokens": 2050}, r"multiple of 4 \(e.g. --seq-length 2047\)"),
        ("ulysses_attn", {"anneal_steps": 10}, "--anneal-steps 10 needs a full attention mask"),
        ("ulysses_attn", {"uses_deepspeed": False}, "launch with a DeepSpeed config"),
        ("ulysses_attn", {"attn_implementation": "eager"}, "not eager"),
        ("ulysses_attn", {"num_heads": 5, "sp_size": 4}, "do not divide among --sp-size 4"),
        ("ring_attn", {"attn_implementation": "flash_attention_2"}, "use --attn-implementation sdpa"),
        ("data_parallel", {"sp_size": 2}, "data_parallel uses 1"),
    ],
)
def test_impossible_setups_fail_fast_with_the_reason(mode, change, message):
    with pytest.raises(UserInputError, match=message):
        check_mode(mode, **{**GOOD, **change})


def test_sequence_groups_are_consecutive_ranks():
    layouts = [Layout("ulysses_attn", rank, 8, sp_size=4) for rank in range(8)]
    assert [(layout.dp_rank, layout.sp_rank) for layout in layouts] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]
    assert {layout.dp_size for layout in layouts} == {2}
