"""Engines and task evaluation: batched scores equal direct computation, do not depend on the batch size,
and a model planted to prefer a known answer gets it right."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dlm_eval import TASKS, AutoregressiveEngine, DataSource, Decoding, DiffusionEngine, FillRequest, Settings
from dlm_eval.tasks.choice import ChoiceExample, evaluate_choices
from dlm_eval.tasks.lambada import LastWordExample, evaluate_last_word
from dlm_eval.tasks.triviaqa import QuestionExample, evaluate_answers
from dlm_eval.text import Piece, encode_pair
from llamafactory.ddm import DiffusionLM, SpecialTokens, level_masks, load_diffusion_lm, sequence_nll
from llamafactory.errors import UserInputError
from tests.tiny import tiny_gpt2, tiny_tokenizer
from tests.tolerance import close

from .common import FIXTURES, plant_answer

STEPS = 8


@pytest.fixture(scope="module")
def random_diffugpt(random_checkpoints):
    return load_diffusion_lm(random_checkpoints["diffugpt"])


@pytest.fixture(scope="module")
def planted_diffugpt(planted_diffugpt_dir):
    return load_diffusion_lm(planted_diffugpt_dir)


def fixture_pairs(tokenizer, window: int = 64) -> list[tuple[list[int], list[int]]]:
    """Encoded choices (both prompt formats) of three fixture tasks that fit the tiny models' window untruncated."""
    source = DataSource(FIXTURES)
    examples = TASKS["hellaswag"].load(source) + TASKS["piqa"].load(source) + TASKS["winogrande"].load(source)
    pairs = [pair for e in examples for form in ("original", "harness") for pair in e.encoded(tokenizer, form)]
    return [(c, x) for c, x in pairs if len(c) + len(x) <= window]


def direct_score(model: DiffusionLM, context: list[int], continuation: list[int], steps: int, seed: int,
                 estimator: str) -> float:
    """The likelihood score for one pair, one noise level at a time, on an unpadded single row."""
    total = 0.0
    for positions in level_masks(len(continuation), steps, seed, estimator):
        if not positions:
            continue  # a level that masks nothing adds 0
        ids = torch.tensor([context + continuation])
        masked = [len(context) + p for p in positions]
        ids[0, masked] = model.mask_id
        with torch.no_grad():
            logits = model.token_logits(ids)[0, masked]
        total += F.cross_entropy(logits.float(), torch.tensor(continuation)[positions]).item() / steps
    return total


@pytest.mark.parametrize("estimator", ["original", "exact"])
def test_batched_scores_equal_direct_per_example_computation(random_diffugpt, estimator):
    model, tokenizer = random_diffugpt
    pairs = fixture_pairs(tokenizer)
    batched = DiffusionEngine(model, tokenizer, batch_size=8).score(pairs, steps=STEPS, seed=3, desc="test",
                                                                    estimator=estimator)
    direct = [direct_score(model, c, x, STEPS, 3, estimator) for c, x in pairs]
    assert batched == close(direct)
    assert len(set(round(s, 4) for s in batched)) > len(batched) // 2  # a random model: scores differ


@pytest.mark.parametrize("scorer, prompt_format", [("original", "original"), ("exact", "harness")])
def test_scores_and_choices_do_not_depend_on_batch_size(random_diffugpt, scorer, prompt_format):
    model, tokenizer = random_diffugpt
    examples = TASKS["hellaswag"].load(DataSource(FIXTURES)) + TASKS["siqa"].load(DataSource(FIXTURES))
    settings = Settings(diffusion_steps=STEPS, scorer=scorer, prompt_format=prompt_format)
    one = evaluate_choices("mc", DiffusionEngine(model, tokenizer, batch_size=1), examples, settings)
    eight = evaluate_choices("mc", DiffusionEngine(model, tokenizer, batch_size=8), examples, settings)
    # the same choices; scores equal up to float summation order inside differently shaped matmuls
    for a, b in zip(one.examples, eight.examples, strict=True):
        assert {k: v for k, v in a.items() if k != "scores"} == {k: v for k, v in b.items() if k != "scores"}
        assert a["scores"] == close(b["scores"])
    assert one.metrics == eight.metrics
    assert one.settings == {"prompt_format": prompt_format, "diffusion_steps": STEPS, "seed": 0, "scorer": scorer}


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
        original = tuple((Piece(context), Piece(c, scored=True)) for c in choices)
        examples.append(ChoiceExample(f"planted/{index}", original, tuple((context, c) for c in choices), index))
    return examples


@pytest.mark.parametrize("scorer, prompt_format", [("original", "original"), ("exact", "harness")])
def test_multiple_choice_picks_the_planted_answer(planted_diffugpt, scorer, prompt_format):
    model, tokenizer = planted_diffugpt
    settings = Settings(scorer=scorer, prompt_format=prompt_format)
    result = evaluate_choices("planted", DiffusionEngine(model, tokenizer), planted_choices(), settings)
    assert result.metrics["accuracy"] == 1.0
    assert [r["prediction"] for r in result.examples] == [0, 1, 2]


def test_lambada_counts_each_passage_once(planted_diffugpt):
    model, tokenizer = planted_diffugpt
    examples = [LastWordExample(f"l/{i}", context, target) for i, (context, target) in
                enumerate([("the cat sees the", "dog"), ("a big", "dog"), ("the dog sees the", "cat")])]
    result = evaluate_last_word("lambada", DiffusionEngine(model, tokenizer), examples, Settings())
    assert [r["prediction"] for r in result.examples] == ["dog", "dog", "dog"]
    assert result.metrics["accuracy"] == pytest.approx(2 / 3)


def test_answers_are_as_long_as_the_longest_accepted_answer(planted_diffugpt):
    model, tokenizer = planted_diffugpt
    examples = [QuestionExample("t/0", "Question: Which animal barks??\nAnswer: ", ("dog", "big dog")),
                QuestionExample("t/1", "Question: Which animal meows??\nAnswer: ", ("cat",))]
    longest = len(tokenizer("big dog", add_special_tokens=False)["input_ids"])
    assert longest > 1 and len(tokenizer("cat", add_special_tokens=False)["input_ids"]) == 1
    result = evaluate_answers("triviaqa", DiffusionEngine(model, tokenizer), examples, Settings())
    assert [r["prediction"] for r in result.examples] == [" ".join(["dog"] * longest), "dog"]
    assert [r["exact_match"] for r in result.examples] == [True, False]
    longer = evaluate_answers("triviaqa", DiffusionEngine(model, tokenizer), examples, Settings(), extra_tokens=2)
    assert [r["prediction"] for r in longer.examples] == [" ".join(["dog"] * (longest + 2)), "dog dog dog"]


def test_supervised_prompt_is_framed_as_in_ddm_sft_training(random_diffugpt):
    model, tokenizer = random_diffugpt
    assert DiffusionEngine(model, tokenizer).supervised_prompt([10, 11]) == \
        [tokenizer.bos_token_id, 10, 11, tokenizer.sep_token_id]
    no_separator = tiny_tokenizer()
    no_separator.sep_token = None
    without = DiffusionLM(model.model, SpecialTokens(mask_id=model.mask_id, eos_id=tokenizer.eos_token_id))
    assert DiffusionEngine(without, no_separator).supervised_prompt([10]) == \
        [tokenizer.bos_token_id, 10, tokenizer.eos_token_id]  # as the training stage: EOS stands in for SEP


def test_decoding_precedence_is_original_sampler_then_task_then_flags():
    family = Decoding(temperature=0.9)
    assert Settings().decoding(family) == Decoding(temperature=0.9, top_p=None, strategy="topk", greedy=False)
    assert Settings().decoding(family, temperature=1.0) == Decoding(temperature=1.0, top_p=None, strategy="topk")
    assert Settings(temperature=0.5, greedy=True, top_p=0.9, strategy="random").decoding(family, temperature=1.0) == \
        Decoding(temperature=0.5, top_p=0.9, strategy="random", greedy=True)


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


def test_ar_sequence_nll_is_the_models_own_next_token_loss(random_checkpoints, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(random_checkpoints["gpt2"]).eval()
    ids = torch.randint(0, len(tokenizer), (5, 20), generator=torch.Generator().manual_seed(0))
    engine = AutoregressiveEngine(model, tokenizer, batch_size=2)
    scores = engine.sequence_nll(ids.tolist(), given=1, steps=1, seed=0, desc="test")
    assert [count for _, count in scores] == [19] * 5
    with torch.no_grad():
        reference = float(model(input_ids=ids, labels=ids).loss)
    assert sum(total for total, _ in scores) / (5 * 19) == close(reference)
    later = engine.sequence_nll(ids.tolist(), given=12, steps=1, seed=0, desc="test")
    assert [count for _, count in later] == [8] * 5 and all(b < a for (a, _), (b, _) in zip(scores, later))
    with pytest.raises(UserInputError, match="given must be >= 1"):
        engine.sequence_nll(ids.tolist(), given=0, steps=1, seed=0, desc="test")


def test_diffusion_sequence_nll_is_the_cores_elbo(random_diffugpt):
    model, tokenizer = random_diffugpt
    sequences = torch.randint(0, 200, (3, 16), generator=torch.Generator().manual_seed(1)).tolist()
    engine = DiffusionEngine(model, tokenizer, batch_size=2)
    assert engine.sequence_nll(sequences, given=1, steps=4, seed=3, desc="test") == [
        (close(total), count) for total, count in sequence_nll(model, sequences, steps=4, seed=3,
                                                               prompt_lengths=[1, 1, 1])]


def test_ar_sampling_is_an_option_seeded_by_the_batchs_first_request(random_checkpoints, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(random_checkpoints["gpt2"]).eval()
    sampler = Decoding(temperature=1.0, top_p=None, greedy=False)
    requests = [FillRequest([5, 6, 7], 12, seed=4), FillRequest([5, 8, 9], 12, seed=5)]
    greedy = AutoregressiveEngine(model, tokenizer, full_length=True).fill(requests, sampler, desc="t")
    assert greedy == AutoregressiveEngine(model, tokenizer).fill(requests, Decoding(greedy=True), desc="t")
    engine = AutoregressiveEngine(model, tokenizer, sampling=True, full_length=True)
    sampled = engine.fill(requests, sampler, desc="t")
    assert sampled == engine.fill(requests, sampler, desc="t") and sampled != greedy
    assert engine.fill([FillRequest([5, 6, 7], 12, seed=6), requests[1]], sampler, desc="t") != sampled
    assert engine.fill(requests, Decoding(greedy=True), desc="t") == greedy


def test_ar_holes_stop_at_eos_unless_told_to_run_their_full_length(tokenizer):
    eos = tokenizer.eos_token_id
    model = plant_answer(tiny_gpt2(len(tokenizer), n_positions=32), eos)
    request = [FillRequest([5, 6], 4)]
    assert AutoregressiveEngine(model, tokenizer).fill(request, Decoding(greedy=True), desc="t") == [[]]
    full = AutoregressiveEngine(model, tokenizer, full_length=True).fill(request, Decoding(greedy=True), desc="t")
    assert full == [[eos] * 4]


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
        Decoding(temperature=1.0, top_p=None, greedy=True, strategy="threshold", block_length=4, cache="dual")



def test_engine_window_is_the_core_position_limit():
    from transformers import GPT2Config, LlamaConfig, PretrainedConfig

    from dlm_eval.engine import window

    assert window(GPT2Config(n_positions=96)) == 96
    assert window(LlamaConfig(max_position_embeddings=64)) == 64
    assert window(PretrainedConfig()) > 10**9  # no position table named: never cut
