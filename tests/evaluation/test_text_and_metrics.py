"""Tokenization helpers, window fitting, answer metrics and the paper-layout table."""

from __future__ import annotations

import pytest

from dlm_eval.report import paper_table
from dlm_eval.tasks.gsm8k import final_number, same_number, until_end
from dlm_eval.tasks.rocstories import rouge
from dlm_eval.tasks.triviaqa import contains_answer, matches_answer, normalize_answer, token_f1
from dlm_eval.text import (
    Piece,
    encode,
    encode_pair,
    encode_pieces,
    example_seed,
    fit_infill,
    fit_pair,
    leading_special_ids,
    split_whole,
)


def test_leading_specials(tokenizer, bos_tokenizer):
    assert leading_special_ids(tokenizer) == []
    assert leading_special_ids(bos_tokenizer) == [bos_tokenizer.bos_token_id]


def test_encode_pair_splits_one_tokenization(tokenizer, bos_tokenizer):
    context, continuation = encode_pair(tokenizer, "the cat sees the ", "dog")
    assert continuation == encode(tokenizer, " dog")  # the trailing space moved to the continuation
    assert context + continuation == encode(tokenizer, "the cat sees the dog")
    context, continuation = encode_pair(bos_tokenizer, "the cat sees the", " dog")
    assert context[0] == bos_tokenizer.bos_token_id and context[1:] == encode(bos_tokenizer, "the cat sees the")


def test_encode_pieces_tokenizes_each_piece_on_its_own(tokenizer, bos_tokenizer):
    pieces = (Piece("the cat sees ", special_tokens=True), Piece("the", scored=True), Piece("dog.", scored=True))
    context, continuation = encode_pieces(bos_tokenizer, pieces)
    assert context == bos_tokenizer("the cat sees ")["input_ids"] and context[0] == bos_tokenizer.bos_token_id
    assert continuation == encode(bos_tokenizer, "the") + encode(bos_tokenizer, "dog.")
    assert encode_pieces(tokenizer, pieces)[0] == encode(tokenizer, "the cat sees ")  # no BOS to add
    with pytest.raises(ValueError):
        encode_pieces(tokenizer, (Piece("a", scored=True), Piece("b")))


def test_split_whole_counts_the_prefixs_own_tokens(bos_tokenizer):
    context, target = split_whole(bos_tokenizer, "the cat sees the", "the cat sees the dog", special_tokens=True)
    whole = bos_tokenizer("the cat sees the dog")["input_ids"]
    assert context + target == whole
    assert len(context) == len(bos_tokenizer("the cat sees the")["input_ids"]) and target == encode(bos_tokenizer, " dog")


def test_fit_pair_cuts_context_from_the_left_keeping_its_first_token():
    assert fit_pair([1, 2, 3], [4, 5], 8) == ([1, 2, 3], [4, 5], False)
    assert fit_pair([1, 2, 3, 4, 5, 6], [7, 8], 5) == ([1, 5, 6], [7, 8], True)
    assert fit_pair([1, 2], [3, 4, 5, 6, 7], 4) == ([1], [3, 4, 5], True)


def test_fit_infill_cuts_prefix_then_suffix():
    assert fit_infill([1, 2, 3], 2, [7, 8], 10) == ([1, 2, 3], 2, [7, 8], False)
    assert fit_infill([1, 2, 3, 4], 2, [7, 8], 6) == ([1, 4], 2, [7, 8], True)
    assert fit_infill([1, 2, 3, 4], 3, [7, 8, 9], 5) == ([1], 3, [7], True)
    assert fit_infill([1, 2], 9, [7], 4) == ([1], 3, [], True)


def test_example_seed_depends_on_seed_task_and_index_only():
    assert example_seed(0, "lambada", 3) == example_seed(0, "lambada", 3)
    assert len({example_seed(0, "lambada", 3), example_seed(1, "lambada", 3), example_seed(0, "triviaqa", 3),
                example_seed(0, "lambada", 4)}) == 4


def test_answer_metrics():
    assert normalize_answer("The  Pacific, Ocean!") == ["pacific", "ocean"]
    assert matches_answer("Pacific Ocean is big", ("The Pacific",))
    assert matches_answer("onion", ("on",))  # the original rule: a substring of the normalized text
    assert matches_answer("the red planet", (), ("red planet",))  # TriviaQA's normalized aliases count too
    assert not matches_answer("anything", ("The",))  # an answer that normalizes to nothing matches nothing
    assert contains_answer("Pacific Ocean is big", ("The Pacific",))
    assert not contains_answer("onion", ("on",))  # whole words only
    assert token_f1("pacific", ("Pacific Ocean", "Atlantic")) == pytest.approx(2 / 3)
    assert token_f1("", ("Mars",)) == 0.0


def test_gsm8k_answer_extraction():
    assert final_number("so 3 * 4 = 12\n#### 12") == "12"
    assert final_number("#### 1,000 then #### $-2.50") == "-2.50"
    assert final_number("no answer") is None
    assert same_number("1000", "1000.0") and not same_number(None, "3") and not same_number("4", "3")
    assert until_end([5, 6, 2, 7], frozenset({2})) == [5, 6]


def test_rouge_f_measures():
    exact, partial = rouge(["the cat sat", "a dog ran home"], ["the cat sat", "the dog ran"])
    assert exact == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    assert 0 < partial["rouge2"] < partial["rouge1"] < 1


def test_paper_table_layout():
    results = {"piqa": {"metrics": {"accuracy": 0.5773}},
               "rocstories": {"metrics": {"rouge1": 0.137, "rouge2": 0.014, "rougeL": 0.126}}}
    header, rule, row = paper_table("diffugpt-s", results).splitlines()
    assert header == "| model | TriQA | Lamb. | HSwag | Wino | SIQA | PIQA | GSM8K | ROC R1/R2/RL | Code |"
    assert rule.count("---") == 10
    assert row == "| diffugpt-s | - | - | - | - | - | 57.7 | - | 13.7/1.4/12.6 | - |"
    with_extra = paper_table("m", {"lambada_openai": {"metrics": {"accuracy": 0.25}}})
    assert "Lamb.-OAI" in with_extra.splitlines()[0] and "25.0" in with_extra
