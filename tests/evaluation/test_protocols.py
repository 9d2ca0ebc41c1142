"""The original evaluation's protocols (docs/design.md#evaluation-protocols): the decoding each task resolves
to per model family, and the token ids of the multiple-choice prompts, checked against strings written here."""

from __future__ import annotations

import json

import pytest

from dlm_eval import TASKS, DataSource, Decoding
from dlm_eval.cli import DIFFUGPT, DIFFULLAMA, build_parser, main, settings_from
from dlm_eval.sandbox import ExecResult
from dlm_eval.text import encode

from .common import FIXTURES

GENERATION_TASKS = ("lambada", "triviaqa", "squad", "rocstories", "humaneval", "gsm8k")


class RecordingEngine:
    """A diffusion engine that records what each task asks it to generate, and generates nothing."""

    kind = "diffusion"

    def __init__(self, tokenizer, decoding: Decoding) -> None:
        self.tokenizer, self.decoding = tokenizer, decoding
        self.max_length, self.eos_ids = 512, frozenset({tokenizer.eos_token_id})
        self.calls: dict[str, tuple[list, Decoding]] = {}

    def fill(self, requests, decoding, *, desc):
        self.calls[desc] = (list(requests), decoding)
        return [[] for _ in requests]

    def supervised_prompt(self, prompt):
        return [self.tokenizer.bos_token_id, *prompt, self.tokenizer.sep_token_id]


def expected_decoding(task: str, family) -> tuple[Decoding, str]:
    """The original decoding of ``task`` (temperature, top-k rule, no top-p, argmax for GSM8K) and its T."""
    if task == "lambada":
        return Decoding(temperature=1.0, top_p=None, strategy="topk", greedy=False), "target length"
    if task == "gsm8k":
        return Decoding(temperature=family.gsm8k_temp, top_p=None, strategy="topk", greedy=True), "64"
    steps = "32" if task in ("rocstories", "humaneval") else "answer length"
    return Decoding(temperature=family.logits_temp, top_p=None, strategy="topk", greedy=False), steps


@pytest.mark.parametrize("family, temperatures", [(DIFFUGPT, (0.95, 0.98)), (DIFFULLAMA, (0.9, 1.0))])
def test_each_generation_task_resolves_to_the_original_decoding(family, temperatures, tokenizer, monkeypatch):
    assert (family.logits_temp, family.gsm8k_temp) == temperatures
    monkeypatch.setattr("dlm_eval.tasks.humaneval.run_programs",
                        lambda programs, limits, workers, desc: [ExecResult("failed")] * len(programs))
    settings = settings_from(build_parser(family).parse_args([]), family)
    engine = RecordingEngine(tokenizer, Decoding(temperature=family.logits_temp))  # as cli.load_engine builds it
    source = DataSource(FIXTURES)
    for task in GENERATION_TASKS:
        result = TASKS[task].evaluate(engine, TASKS[task].load(source), settings)
        requests, decoding = engine.calls[task]
        expected, steps = expected_decoding(task, family)
        assert decoding == expected, task
        assert {k: result.settings[k] for k in expected.as_dict()} == expected.as_dict(), task  # in results.json
        if steps == "target length":
            assert all(r.steps == r.length for r in requests)
        elif steps == "answer length":
            examples = TASKS[task].load(source)
            lengths = [max(len(encode(tokenizer, a)) for a in e.answers) for e in examples]
            assert [(r.length, r.steps) for r in requests] == [(n, n) for n in lengths], task  # no extra tokens
        else:
            assert {r.steps for r in requests} == {int(steps)}, task


def test_results_json_records_the_decoding_of_the_loaded_family(random_checkpoints, tmp_path):
    output = tmp_path / "out"
    argv = ["--model_name", str(random_checkpoints["diffullama"]), "--tasks", "lambada,triviaqa,piqa",
            "--data_dir", str(FIXTURES), "--limit", "1", "--output_dir", str(output), "--diffusion_steps", "2"]
    assert main(DIFFULLAMA, argv) == 0
    settings = {task: entry["settings"] for task, entry in json.loads((output / "results.json").read_text())["tasks"].items()}
    assert settings["lambada"] | {"temperature": 1.0, "top_p": None, "strategy": "topk", "greedy": False} == \
        settings["lambada"]
    assert settings["triviaqa"] | {"temperature": 0.9, "top_p": None, "strategy": "topk", "extra_tokens": 0} == \
        settings["triviaqa"]
    assert settings["piqa"] == {"prompt_format": "original", "diffusion_steps": 2, "seed": 0, "scorer": "original"}


def _ids(tokenizer, text: str, special_tokens: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=special_tokens)["input_ids"]


@pytest.mark.parametrize("with_bos", [False, True])
def test_multiple_choice_prompts_tokenize_as_the_original_scripts(with_bos, tokenizer, bos_tokenizer):
    tok = bos_tokenizer if with_bos else tokenizer
    bos = [tok.bos_token_id] if with_bos else []
    source = DataSource(FIXTURES)
    piqa = TASKS["piqa"].load(source)[1].encoded(tok, "original")
    question = _ids(tok, "Question: To cool a cup of tea quickly,\nAnswer: ", False)
    assert piqa[1] == (bos + question, bos + _ids(tok, " add a cube of ice.", False))  # BOS before the choice too
    siqa = TASKS["siqa"].load(source)[0].encoded(tok, "original")
    question = _ids(tok, "Question: Sam gave a fish to the hungry cat. How would you describe Sam?\nAnswer: ", False)
    assert siqa[2] == (question, _ids(tok, "asleep", False))  # no BOS anywhere
    winogrande = TASKS["winogrande"].load(source)[0].encoded(tok, "original")
    assert winogrande[1] == (_ids(tok, "The cat was quicker than the dog so the ", False),
                             _ids(tok, "dog", False) + _ids(tok, "won the race.", False))
    hellaswag = TASKS["hellaswag"].load(source)[2].encoded(tok, "original")
    assert hellaswag[3] == (bos + _ids(tok, "Cooking: A woman puts a pot on the stove. she", False),
                            bos + _ids(tok, "adds water and waits for it to boil.", False))
    assert bos_tokenizer.bos_token_id not in _ids(tokenizer, "Question: a\nAnswer: b", True)  # the plain one adds none


def test_harness_prompts_tokenize_each_pair_as_one_string(bos_tokenizer):
    tok = bos_tokenizer
    piqa = TASKS["piqa"].load(DataSource(FIXTURES))[1].encoded(tok, "harness")
    context, continuation = piqa[1]
    assert context == _ids(tok, "Question: To cool a cup of tea quickly,\nAnswer:", True)
    assert context + continuation == _ids(tok, "Question: To cool a cup of tea quickly,\nAnswer: add a cube of ice.", True)
    winogrande = TASKS["winogrande"].load(DataSource(FIXTURES))[0].encoded(tok, "harness")
    assert winogrande[0][1] == _ids(tok, " won the race.", False)  # partial scoring: only the rest is scored


def test_a_winogrande_blank_opening_the_sentence_gives_the_options_first_token(tokenizer):
    from dlm_eval.tasks.choice import winogrande_example

    example = winogrande_example(0, "", ["Anna", "Ben"], "was hungry.", 0)
    option, rest = _ids(tokenizer, "Anna", False), _ids(tokenizer, "was hungry.", False)
    assert example.encoded(tokenizer, "original")[0] == (option[:1], option[1:] + rest)
