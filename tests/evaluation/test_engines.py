"""Engines and task evaluation: batched scores equal direct computation, do not depend on the batch size,
and a model planted to prefer a known answer gets it right."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dlm_eval import TASKS, AutoregressiveEngine, DataSource, Decoding, DiffusionEngine, FillRequest, Settings
from dlm_eval.tasks.choice import ChoiceExample, evaluate_choices
from dlm_eval.tasks.lambada import LastWordExample, evaluate_last_word
from dlm_eval.tasks.triviaqa import QuestionExample, evaluate_triviaqa
from dlm_eval.text import encode_pair
from llamafactory.ddm import DiffusionLM, SpecialTokens, level_masks, load_diffusion_lm
from tests.tiny import tiny_tokenizer

from .common import FIXTURES

STEPS = 8


@pytest.fixture(scope="module")
def random_diffugpt(random_checkpoints):
    return load_diffusion_lm(random_checkpoints["diffugpt"])


@pytest.fixture(scope="module")
def planted_diffugpt(planted_diffugpt_dir):
    return load_diffusion_lm(planted_diffugpt_dir)


def fixture_pairs(tokenizer, window: int = 64) -> list[tuple[list[int], list[int]]]:
    """Encoded choices of three fixture tasks that fit the tiny models' window untruncated."""
    source = DataSource(FIXTURES)
    examples = TASKS["hellaswag"].load(source) + TASKS["piqa"].load(source) + TASKS["winogrande"].load(source)
    pairs = [encode_pair(tokenizer, c, x) for e in examples for c, x in e.pairs]
    return [(c, x) for c, x in pairs if len(c) + len(x) <= window]


def direct_score(model: DiffusionLM, context: list[int], continuation: list[int], steps: int, seed: int) -> float:
    """The likelihood score for one pair, one noise level at a time, on an unpadded single row."""
    total = 0.0
    for positions in level_masks(len(continuation), steps, seed):
        ids = torch.tensor([context + continuation])
        masked = [len(context) + p for p in positions]
        ids[0, masked] = model.mask_id
        with torch.no_grad():
            logits = model.token_logits(ids)[0, masked]
        total += F.cross_entropy(logits.float(), torch.tensor(continuation)[positions]).item() / steps
    return total


def test_batched_scores_equal_direct_per_example_computation(random_diffugpt):
    model, tokenizer = random_diffugpt
    pairs = fixture_pairs(tokenizer)
    batched = DiffusionEngine(model, tokenizer, batch_size=8).score(pairs, steps=STEPS, seed=3, desc="test")
    direct = [direct_score(model, c, x, STEPS, 3) for c, x in pairs]
    assert batched == pytest.approx(direct, rel=1e-5, abs=1e-5)
    assert len(set(round(s, 4) for s in batched)) > len(batched) // 2  # a random model: scores differ


def test_scores_and_choices_do_not_depend_on_batch_size(random_diffugpt):
    model, tokenizer = random_diffugpt
    examples = TASKS["hellaswag"].load(DataSource(FIXTURES)) + TASKS["siqa"].load(DataSource(FIXTURES))
    settings = Settings(diffusion_steps=STEPS)
    one = evaluate_choices("mc", DiffusionEngine(model, tokenizer, batch_size=1), examples, settings)
    eight = evaluate_choices("mc", DiffusionEngine(model, tokenizer, batch_size=8), examples, settings)
    # the same choices; scores equal up to float summation order inside differently shaped matmuls
    for a, b in zip(one.examples, eight.examples, strict=True):
        assert {k: v for k, v in a.items() if k != "scores"} == {k: v for k, v in b.items() if k != "scores"}
        assert a["scores"] == pytest.approx(b["scores"], rel=1e-6, abs=1e-6)
    assert one.metrics == eight.metrics


@pytest.mark.parametrize("decoding", [
    Decoding(temperature=0.95, top_p=0.9, strategy="random"),
    Decoding(temperature=0.95, top_p=0.9, strategy="confidence", block_length=2, cache="dual"),
], ids=["one-block", "blocks-dual-cache"])
def test_generation_does_not_depend_on_batch_size(random_diffugpt, decoding):
    model, tokenizer = random_diffugpt
    requests = [FillRequest(encode_pair(tokenizer, f"the {w} sees the", "")[0], length, [7, 8] if length > 2 else [],
                            steps=steps, seed=index)
                for index, (w, length, steps) in enumerate([("cat", 3, 4), ("big dog", 5, 4), ("bird", 2, 2),
                                                            ("sun and the moon", 4, 4), ("fish", 1, 2)])]
    one = DiffusionEngine(model, tokenizer, batch_size=1).fill(requests, decoding, desc="test")
    eight = DiffusionEngine(model, tokenizer, batch_size=8).fill(requests, decoding, desc="test")
    assert one == eight
    assert [len(hole) for hole in one] == [3, 5, 2, 4, 1]
    assert all(model.mask_id not in hole for hole in one)


def planted_choices() -> list[ChoiceExample]:
    contexts = ["The cat sees the", "Question: Who runs under the tree?\nAnswer:", "one two three"]
    wrong = [" moon sky", " red fish", " slow river"]
    examples = []
    for index, context in enumerate(contexts):
        choices = list(wrong)
        choices.insert(index, " dog dog")
        examples.append(ChoiceExample(f"planted/{index}", tuple((context, c) for c in choices), index))
    return examples


def test_multiple_choice_picks_the_planted_answer(planted_diffugpt):
    model, tokenizer = planted_diffugpt
    result = evaluate_choices("planted", DiffusionEngine(model, tokenizer), planted_choices(), Settings())
    assert result.metrics["accuracy"] == 1.0
    assert [r["prediction"] for r in result.examples] == [0, 1, 2]


def test_lambada_counts_each_passage_once(planted_diffugpt):
    model, tokenizer = planted_diffugpt
    examples = [LastWordExample(f"l/{i}", context, target) for i, (context, target) in
                enumerate([("the cat sees the", "dog"), ("a big", "dog"), ("the dog sees the", "cat")])]
    result = evaluate_last_word("lambada", DiffusionEngine(model, tokenizer), examples, Settings())
    assert [r["prediction"] for r in result.examples] == ["dog", "dog", "dog"]
    assert result.metrics["accuracy"] == pytest.approx(2 / 3)


def test_triviaqa_finds_the_answer_in_a_longer_generation(planted_diffugpt):
    model, tokenizer = planted_diffugpt
    examples = [QuestionExample("t/0", "Question: Which animal barks?\nAnswer:", "dog", ("dog", "hound")),
                QuestionExample("t/1", "Question: Which animal meows?\nAnswer:", "cat", ("cat",))]
    result = evaluate_triviaqa(DiffusionEngine(model, tokenizer), examples, Settings(triviaqa_extra_tokens=2))
    assert [r["prediction"] for r in result.examples] == ["dog dog dog", "dog dog dog"]
    assert result.metrics == {"exact_match": 0.5, "f1": pytest.approx(0.25)}


def test_supervised_prompt_is_framed_as_in_ddm_sft_training(random_diffugpt):
    model, tokenizer = random_diffugpt
    assert DiffusionEngine(model, tokenizer).supervised_prompt([10, 11]) == \
        [tokenizer.bos_token_id, 10, 11, tokenizer.sep_token_id]
    no_separator = tiny_tokenizer()
    no_separator.sep_token = None
    without = DiffusionLM(model.model, SpecialTokens(mask_id=model.mask_id, eos_id=tokenizer.eos_token_id))
    assert DiffusionEngine(without, no_separator).supervised_prompt([10]) == \
        [tokenizer.bos_token_id, 10, tokenizer.eos_token_id]  # as the training stage: EOS stands in for SEP


def test_decoding_precedence_is_family_then_task_then_flags():
    family = Decoding(temperature=0.9)
    assert Settings().decoding(family, temperature=1.0) == Decoding(temperature=1.0)
    assert Settings(temperature=0.5, greedy=True).decoding(family, temperature=1.0, strategy="topk") == \
        Decoding(temperature=0.5, strategy="topk", greedy=True)


def ar_log_likelihood(model, context: list[int], continuation: list[int]) -> float:
    with torch.no_grad():
        log_probs = model(torch.tensor([context + continuation])).logits[0].log_softmax(-1)
    return sum(log_probs[len(context) + i - 1, token].item() for i, token in enumerate(continuation))


def test_ar_scores_are_negated_continuation_log_likelihoods(random_checkpoints, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(random_checkpoints["gpt2"]).eval()
    pairs = fixture_pairs(tokenizer)
    scores = AutoregressiveEngine(model, tokenizer, batch_size=8).score(pairs, steps=1, seed=0, desc="test")
    assert scores == pytest.approx([-ar_log_likelihood(model, c, x) for c, x in pairs], rel=1e-4, abs=1e-4)


def test_ar_baseline_picks_and_generates_the_planted_answer(planted_gpt2, tokenizer):
    engine = AutoregressiveEngine(planted_gpt2, tokenizer, batch_size=2)
    assert evaluate_choices("planted", engine, planted_choices(), Settings()).metrics["accuracy"] == 1.0
    examples = [LastWordExample("l/0", "the cat sees the", "dog"), LastWordExample("l/1", "one two", "three")]
    result = evaluate_last_word("lambada", engine, examples, Settings())
    assert [r["prediction"] for r in result.examples] == ["dog", "dog"]
    holes = engine.fill([FillRequest([5, 6, 7], 3, [9, 9]), FillRequest([5], 1)], engine.decoding, desc="test")
    dog = engine.tokenizer.convert_tokens_to_ids("Ġdog")
    assert holes == [[dog] * 3, [dog]]


def test_fast_generation_flags_reach_every_task_decoding():
    flags = Settings(greedy=True, fast_generation={"block_length": 4, "cache": "dual", "strategy": "threshold"})
    assert flags.decoding(Decoding(temperature=0.9), temperature=1.0, strategy="topk") == \
        Decoding(temperature=1.0, greedy=True, strategy="threshold", block_length=4, cache="dual")

