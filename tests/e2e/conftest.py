"""Fixtures for the tiny end-to-end pipeline (LLaMA-Factory/examples/tiny): its scripts as modules, and the
synthetic data, tokenizer and test sets they produce, built once per session in temporary folders."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

REPO = Path(__file__).resolve().parents[2]
FACTORY = REPO / "LLaMA-Factory"
PIPELINE = FACTORY / "examples" / "tiny" / "pipeline"
BUNDLED_MODEL = REPO / "assets" / "diffugpt-tiny"


def example_module(folder: Path, name: str) -> ModuleType:
    """``folder/<name>.py`` (an example script) imported by file path under a private name, once per session."""
    qualified = f"example_{folder.name}_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def pipeline_module(name: str) -> ModuleType:
    """A script of examples/tiny/pipeline as a module (they are scripts, not a package)."""
    return example_module(PIPELINE, name)


@pytest.fixture(scope="session")
def synthetic() -> ModuleType:
    return pipeline_module("synthetic")


@pytest.fixture(scope="session")
def compare() -> ModuleType:
    return pipeline_module("compare")


@pytest.fixture(scope="session")
def tiny_data(synthetic, tmp_path_factory) -> Path:
    """The data folder of a small run: training sets, registry and test sets."""
    out = tmp_path_factory.mktemp("tiny_data")
    synthetic.write_dataset(out, seed=0, corpus_size=2000, sft_size=300, test_size=30)
    return out


@pytest.fixture(scope="session")
def pipeline_tokenizer(tiny_data, tmp_path_factory):
    """The pipeline's BPE tokenizer trained on the small corpus, saved and loaded back."""
    from transformers import AutoTokenizer

    trainer = pipeline_module("train_tokenizer")
    folder = tmp_path_factory.mktemp("tokenizer")
    tokenizer = trainer.train_tokenizer(trainer.corpus_lines(tiny_data / "tiny_corpus.jsonl"), 512, 128)
    tokenizer.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def readme_table(header: str) -> dict[str, list[str]]:
    """The README table that starts with ``header``: row label -> its other cells, as written (bold marks
    dropped)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(header)
    rows = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip().strip("*") for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows
