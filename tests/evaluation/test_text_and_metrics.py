"""Tokenization helpers, window fitting, answer metrics and the paper-layout table."""

from __future__ import annotations

import pytest
from tokenizers import processors
from transformers import PreTrainedTokenizerFast

from dlm_eval.report import paper_table
from dlm_eval.tasks.gsm8k import final_number, same_number, until_end
from dlm_eval.tasks.rocstories import rouge
from dlm_eval.tasks.triviaqa import contains_answer, first_line, normalize_answer, token_f1
from dlm_eval.text import encode, encode_pair, example_seed, fit_infill, fit_pair, leading_special_ids
from tests.tiny import tiny_tokenizer


@pytest.fixture(scope="module")
def bos_tokenizer():
    """The tiny tokenizer made to prepend <s>, as LLaMA's does."""
    base = tiny_tokenizer()
    backend = base.backend_tokenizer
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", base.bos_token_id)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   mask_token="<mask>")


def test_leading_specials(tokenizer, bos_tokenizer):
    assert leading_special_ids(tokenizer) == []
    assert leading_special_ids(bos_tokenizer) == [bos_tokenizer.bos_token_id]


def test_encode_pair_splits_one_tokenization(tokenizer, bos_tokenizer):
    context, continuation = encode_pair(tokenizer, "the cat sees the ", "dog")
    assert continuation == encode(tokenizer, " dog")  # the trailing space moved to the continuation
    assert context + continuation == encode(tokenizer, "the cat sees the dog")
    context, continuation = encode_pair(bos_tokenizer, "the cat sees the", " dog")
    assert context[0] == bos_tokenizer.bos_token_id and context[1:] == encode(bos_tokenizer, "the cat sees the")


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


def test_triviaqa_metrics():
    assert normalize_answer("The  Pacific, Ocean!") == ["pacific", "ocean"]
    assert contains_answer("Pacific Ocean is big", ("The Pacific",))
    assert not contains_answer("onion", ("on",))  # whole words only, unlike a substring test
    assert token_f1("pacific", ("Pacific Ocean", "Atlantic")) == pytest.approx(2 / 3)
    assert token_f1("", ("Mars",)) == 0.0
    assert first_line("  Mars\nQuestion: next") == "Mars"


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
