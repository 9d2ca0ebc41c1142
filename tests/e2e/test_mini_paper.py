"""The mini-paper pipeline (LLaMA-Factory/examples/mini_paper): the held-out split is by document, the
measurements score what they claim, the Hub default fails offline with one line, the committed table is
a pure function of the committed results.json, and a shortened run goes through every stage."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from dlm_eval import DiffusionEngine
from llamafactory.ddm import DiffusionLM, resolve_special_tokens
from tests.e2e.conftest import FACTORY, REPO, example_module, pipeline_module, readme_table
from tests.tiny import corpus
from tests.tolerance import close

MINI_PAPER = FACTORY / "examples" / "mini_paper"
COMMITTED = REPO / "example_output" / "mini_paper"
RUNS = ("ar", "ddm-adapted", "ddm-no-anneal", "ddm-no-shift", "ddm-scratch", "ddm-scratch-long", "ddm-block4",
        "ddm-block16")


def script(name: str) -> ModuleType:
    """A script of examples/mini_paper as a module, imported by file path."""
    return example_module(MINI_PAPER, name)


def write_text(path: Path, paragraphs: int = 60, lines_per_paragraph: int = 5, seed: int = 0) -> Path:
    """Pseudo-English paragraphs separated by blank lines, as a plain text file."""
    lines = corpus(paragraphs * lines_per_paragraph, seed)
    blocks = [" ".join(lines[i : i + lines_per_paragraph]) for i in range(0, len(lines), lines_per_paragraph)]
    path.write_text("\n\n".join(blocks) + "\n")
    return path


def environment(**extra: str) -> dict[str, str]:
    """This process's environment (the installed packages) plus ``extra``."""
    return {**os.environ, **extra}


@pytest.fixture(scope="module")
def tokenizer():
    """The pipeline's tokenizer (the tiny pipeline's trainer: byte-level BPE, prefix space) on the test corpus."""
    return pipeline_module("train_tokenizer").train_tokenizer(iter(corpus()), 400, 64)


def test_documents_are_held_out_whole_and_the_split_follows_the_seed(tmp_path):
    prepare_text = script("prepare_text")
    text = prepare_text.local_text(write_text(tmp_path / "text.txt"), min_chars=300)
    summary = prepare_text.prepare(tmp_path / "data", text, heldout=0.2, valid_chars=500, seed=0)
    read = {name: [json.loads(line)["text"] for line in (tmp_path / "data" / f"{name}.jsonl").read_text().splitlines()]
            for name in ("train", "test", "valid")}
    assert sorted(read["train"] + read["test"]) == sorted(text.documents)
    assert not set(read["train"]) & set(read["test"])
    assert read["valid"] == read["test"][: len(read["valid"])] and sum(map(len, read["valid"])) >= 500
    assert summary["documents"] == {name: len(docs) for name, docs in read.items()}
    assert all(len(doc) >= 300 for doc in text.documents)
    info = json.loads((tmp_path / "data" / "dataset_info.json").read_text())
    assert info["mini_train"]["file_name"] == "train.jsonl" and info["mini_valid"]["file_name"] == "valid.jsonl"
    again = prepare_text.split_documents(len(text.documents), 0.2, seed=0)
    other = prepare_text.split_documents(len(text.documents), 0.2, seed=1)
    assert again == prepare_text.split_documents(len(text.documents), 0.2, seed=0) and again != other


def test_a_document_never_spans_two_files(tmp_path):
    prepare_text = script("prepare_text")
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("alpha one.\n\nalpha two.\n")
    (folder / "b.txt").write_text("beta one.\n\nbeta two.\n\nbeta three.\n")
    (folder / "notes.md").write_text("ignored\n")
    text = prepare_text.local_text(folder, min_chars=15)
    assert text.documents == ["alpha one.\n\nalpha two.", "beta one.\n\nbeta two.\n\nbeta three."]
    assert text.source["files"] == 2


def test_wikitext_lines_become_articles():
    prepare_text = script("prepare_text")
    lines = ["", " = First = \n", "", " Some text . \n", " = = Section = = \n", " More . \n", " = Second = \n", " Body . \n"]
    assert list(prepare_text.wikitext_articles(lines)) == [
        "= First =\n\nSome text .\n\n= = Section = =\n\nMore .", "= Second =\n\nBody ."]


def test_the_hub_default_fails_offline_with_one_line_that_names_mini_text(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 sets it (no process launch)
    assert script("prepare_text").main(["--out", str(tmp_path / "data")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Salesforce/wikitext" in lines[0] and "MINI_TEXT=" in lines[0]
    assert not (tmp_path / "data").exists()


def test_an_unreachable_hub_is_reported_before_any_download(monkeypatch):
    prepare_text = script("prepare_text")
    from huggingface_hub import constants

    from llamafactory.errors import UserInputError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(prepare_text, "hub_reachable", lambda timeout=10.0: False)
    with pytest.raises(UserInputError, match="cannot reach the Hugging Face Hub .* set MINI_TEXT="):
        prepare_text.hub_text()


def verse(lines: list[str]) -> str:
    """Lines joined with a line break after every fifth word, as in verse: sentences run across lines."""
    words = " ".join(lines).split(" ")
    return "".join(word + ("\n" if i % 5 == 4 else " ") for i, word in enumerate(words)).strip()


def test_infilling_spans_sit_mid_sentence_and_their_pieces_are_the_tokens_of_the_whole_text(tokenizer):
    measure = script("measure")
    documents = [" ".join(corpus(40, 0)), verse(corpus(40, 1)), verse(corpus(40, 2))]
    examples = measure.infill_examples(tokenizer, documents, count=20, span_words=3, context=1000, seed=0)
    assert len(examples) == 20
    for example in examples:
        whole = [tokenizer.eos_token_id, *tokenizer(tokenizer.decode(example.before[1:] + example.target + example.after[:-1]),
                                                    add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        assert list(example.before + example.target + example.after) == whole
        span = tokenizer.decode(example.target)
        assert "\n" not in span and len(span.split()) == 3 and all(w.isalpha() for w in span.split())
        before = tokenizer.decode(example.before[1:]).split(".")[-1].split()
        after = tokenizer.decode(example.after[:-1]).split(".")[0].split()
        assert len(before) >= 2 and len(after) >= 2  # two words of the same sentence on each side


def test_spans_come_from_distinct_sentences_and_follow_the_seed(tokenizer):
    measure = script("measure")
    documents = [" ".join(corpus(40, seed)) for seed in range(3)]
    first = measure.infill_examples(tokenizer, documents, count=15, span_words=2, context=8, seed=0)
    assert first == measure.infill_examples(tokenizer, documents, count=15, span_words=2, context=8, seed=0)
    assert first != measure.infill_examples(tokenizer, documents, count=15, span_words=2, context=8, seed=1)
    assert all(len(e.before) <= 8 and len(e.after) <= 8 for e in first)


def test_unigram_entropy_flags_repetition():
    measure = script("measure")
    assert measure.unigram_entropy([7] * 10) == 0.0
    assert measure.unigram_entropy([1, 2, 3, 4]) == close(math.log(4))


def test_a_sampled_row_does_not_depend_on_the_other_rows(tokenizer):
    measure = script("measure")
    from tests.tiny import tiny_gpt2

    model = DiffusionLM(tiny_gpt2(len(tokenizer), n_positions=24, seed=2),
                        resolve_special_tokens(tokenizer, "gpt2", len(tokenizer))).eval()
    prompts = [[tokenizer.eos_token_id, 5, 6, 7], [tokenizer.eos_token_id, 9, 9, 9], [tokenizer.eos_token_id, 1, 2, 3]]
    engine = DiffusionEngine(model, tokenizer)
    both = measure.samples(engine, measure.GenerationTask("prefix", prompts, 24), seed=0, steps=6)
    alone = measure.samples(engine, measure.GenerationTask("prefix", prompts[:1], 24), seed=0, steps=6)
    assert both[0] == alone[0] and len(both[0]) == 20
    assert model.mask_id not in {token for row in both for token in row}


def test_a_sample_with_control_characters_reads_back_as_it_was_rendered(tmp_path):
    printable = script("report").printable
    shown = printable("thou\r art\x0b\n\tmine\u200b")
    assert shown == "thou\\r art\\x0b\n\tmine\\u200b"
    (tmp_path / "sample.md").write_text(shown, encoding="utf-8")
    assert (tmp_path / "sample.md").read_text(encoding="utf-8") == shown


@pytest.mark.skipif(not (COMMITTED / "results.json").is_file(), reason="no committed mini-paper run")
def test_the_committed_table_is_rendered_from_the_committed_results():
    report = script("report")
    results = json.loads((COMMITTED / "results.json").read_text(encoding="utf-8"))
    assert report.render(results) == (COMMITTED / "results.md").read_text(encoding="utf-8")
    assert [m["name"] for m in results["models"]] == list(RUNS)
    log = (COMMITTED / "pipeline.log").read_text(encoding="utf-8")
    assert f"=== command: {results['meta']['command']}" in log and "MINI_SEED=0" in log
    assert results["meta"]["text"]["description"] in log and "pipeline finished in" in log


README_ROWS = {  # the root README's mini-paper rows -> results.json model names
    "adapted (shift + annealing), 600 diffusion steps": "ddm-adapted",
    "adapted without annealing": "ddm-no-anneal",
    "adapted without shift": "ddm-no-shift",
    "from scratch, 600 steps": "ddm-scratch",
    "from scratch, 1800 steps (equal total compute)": "ddm-scratch-long",
    "block diffusion, B = 4 (adapted, 600 steps)": "ddm-block4",
    "block diffusion, B = 16 (adapted, 600 steps)": "ddm-block16",
    "AR base (exact NLL; prefix-only infilling)": "ar",
}


@pytest.mark.skipif(not (COMMITTED / "results.json").is_file(), reason="no committed mini-paper run")
def test_the_readme_mini_paper_table_is_the_committed_results():
    results = json.loads((COMMITTED / "results.json").read_text(encoding="utf-8"))
    models = {model["name"]: model for model in results["models"]}
    table = readme_table("| model | PPL bound ↓ | infilling acc. ↑ (%) |")
    assert set(table) == set(README_ROWS)
    for label, name in README_ROWS.items():
        model = models[name]
        generation = model["generation"]["unconditional"]
        infill = model["infilling"]
        expected = [
            f"{model['likelihood']['perplexity']:.1f}",
            "n/a" if infill is None else f"{infill['token_accuracy']:.1f}",
            f"{(generation['ar'] if name == 'ar' else generation['n'])['gen_ppl']:.1f}",
            "—" if "threshold" not in generation else
            f"{generation['threshold']['gen_ppl']:.1f} / {generation['threshold']['entropy']:.2f}",
        ]
        assert table[label] == expected, label


@pytest.mark.slow
def test_a_shortened_run_goes_through_every_stage_and_writes_every_output(tmp_path):
    work = tmp_path / "work"
    env = environment(MINI_QUICK="1", MINI_TEXT=str(write_text(tmp_path / "text.txt")), MINI_WORK=str(work),
                      HF_DATASETS_CACHE=str(tmp_path / "datasets_cache"), HF_HUB_OFFLINE="1")
    result = subprocess.run(["bash", "examples/mini_paper/run.sh"], cwd=FACTORY, env=env, capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    out = work / "example_output"
    results = json.loads((out / "results.json").read_text())
    models = {m["name"]: m for m in results["models"]}
    assert list(models) == list(RUNS)
    assert {name: (m["ar_steps"], m["diffusion_steps"]) for name, m in models.items()} == {
        "ar": (8, 0), "ddm-adapted": (8, 6), "ddm-no-anneal": (8, 6), "ddm-no-shift": (8, 6), "ddm-scratch": (0, 6),
        "ddm-scratch-long": (0, 14), "ddm-block4": (8, 6), "ddm-block16": (8, 6)}
    assert [models[n]["shift"] for n in RUNS[1:]] == [True, True, False, True, True, True, True]
    assert [models[n]["anneal_steps"] for n in RUNS[1:]] == [3, 1, 3, 1, 1, 3, 3]
    assert [models[n]["block_size"] for n in RUNS[1:]] == [None] * 5 + [4, 16]
    for name in RUNS[1:]:
        model = models[name]
        block = model["block_size"] is not None
        assert model["likelihood"]["bound"] and [step for step, _ in model["validation"]][:2] == [0, 3]
        assert list(model["generation"]["unconditional"]) == ["n", "threshold"] if block else ["16", "64", "n", "threshold"]
        assert (model["infilling"] is None) == block
        for cell in model["generation"]["prefix"].values():  # every cell generated 32 - 8 tokens per row, 4 rows
            assert cell["tokens"] == 4 * 24 and cell["seconds"] > 0 and cell["nfe"] >= 1
        assert all(cell["nfe"] <= 4 * 24 for key, cell in model["generation"]["prefix"].items() if key != "64")
    curve = [loss for step, loss in models["ddm-scratch-long"]["validation"] if step > 0]
    assert curve[-1] < curve[0]
    assert script("report").render(results) == (out / "results.md").read_text()
    for figure in ("validation_loss.png", "generative_perplexity.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = (out / "pipeline.log").read_text()
    assert "\r" not in log and "=== command: bash examples/mini_paper/run.sh" in log and "MINI_SEED=0" in log
    assert f"text: local text {tmp_path / 'text.txt'}" in log and "pipeline finished in" in log
