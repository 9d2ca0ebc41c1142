"""The bundled default model (assets/diffugpt-tiny, written by examples/tiny/run.sh): it loads offline in
the DiffuGPT Hub layout, samples text made of the corpus's words with no mask token left, and infills
held-out records as well as example_output/results.json reports."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest
import torch

from dlm_eval import DiffusionEngine
from dlm_eval.spans import exact_matches, fill_spans
from llamafactory.ddm import SamplingConfig, detect_layout, load_diffusion_lm, sample
from tests.e2e.conftest import BUNDLED_MODEL, REPO

pytestmark = pytest.mark.skipif(not BUNDLED_MODEL.is_dir(), reason="no bundled model: run examples/tiny/run.sh")

RESULTS = REPO / "example_output" / "results.json"
PIPELINE_SEED = 0  # run.sh's default TINY_SEED, which produced the bundled model


@pytest.fixture(scope="module")
def bundled():
    return load_diffusion_lm(BUNDLED_MODEL)


def test_layout_size_and_config(bundled):
    model, tokenizer = bundled
    assert detect_layout(BUNDLED_MODEL) == "hf" and type(model.causal_lm()).__name__ == "DiffuGPTForMaskedLM"
    assert sum(f.stat().st_size for f in BUNDLED_MODEL.iterdir()) <= 10 * 2**20
    assert model.config.is_causal is False
    assert model.mask_id == tokenizer.mask_token_id


def test_samples_are_corpus_text_without_mask_tokens(bundled, synthetic):
    model, tokenizer = bundled
    vocabulary = {word for record in synthetic.corpus_records(3000, seed=1) for word in record.text.split()}
    ids = torch.full((4, 48), model.mask_id)
    ids[:, 0] = tokenizer.bos_token_id
    config = SamplingConfig(steps=48, temperature=0.95, top_p=0.9)
    generators = [torch.Generator().manual_seed(row) for row in range(4)]
    tokens = sample(model, ids, model.mask_id, config, generator=generators).tokens
    assert not (tokens == model.mask_id).any()
    words = [word for row in tokens.tolist() for word in tokenizer.decode(row, skip_special_tokens=True).split()]
    known = sum(word in vocabulary for word in words) / len(words)
    assert known >= 0.9, f"only {known:.0%} of the sampled words are corpus words"


def test_infilling_reproduces_the_reported_accuracy(bundled, synthetic, compare):
    model, tokenizer = bundled
    reported = json.loads(RESULTS.read_text())
    test_set = synthetic.infill_records(300, seed=PIPELINE_SEED + 2)  # as synthetic.write_dataset draws it
    encoder = compare.Encoder(tokenizer)
    examples = [encoder.infill({"kind": r.kind, "prefix": r.prefix, "middle": r.middle, "suffix": r.suffix})
                for r in test_set]
    engine = DiffusionEngine(model, tokenizer, batch_size=128)
    filled = fill_spans(engine, examples, compare.greedy("confidence"), steps=None, desc="infill")
    accuracy = compare.percent(exact_matches(filled, examples, tokenizer.eos_token_id))
    assert abs(accuracy - reported["diffusion (ddm) | T = n tokens"]["infill"]) <= 3
    assert accuracy >= 50
    assert accuracy >= 2 * reported["AR (pt) | greedy, prefix only"]["infill"]


def test_readme_quick_start_command_runs_offline_and_prints_both_samples():
    """``python inf_diffugpt.py --model_name assets/diffugpt-tiny``, as the README's first command (that no
    mask token is left is checked on the sampler's ids above: the script's text drops special tokens)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "inf_diffugpt.py", "--model_name", "assets/diffugpt-tiny", "--device", "cpu"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Unconditional generation" in result.stdout and "Prefix generation" in result.stdout
    samples = result.stdout.split("Unconditional generation", 1)[1]
    assert len(samples.split()) > 40


def test_readme_hugging_face_snippet_loads_generates_and_decodes(capsys, monkeypatch):
    """The README's six lines: load the bundled model through the Auto classes, generate for a left-padded
    batch, decode."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Hugging Face-native models", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(snippet.strip().splitlines()) == 6
    monkeypatch.chdir(REPO)
    exec(compile(snippet, "README.md", "exec"), {})  # noqa: S102 - the repository's own README
    decoded = ast.literal_eval(capsys.readouterr().out.strip().splitlines()[-1])
    assert [text.split()[:2] for text in decoded] == [["the", "capital"], ["red", "green"]]
    assert all(len(text.split()) > 4 for text in decoded)

