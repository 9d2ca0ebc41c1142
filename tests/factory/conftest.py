"""Fixtures for the LLaMA-Factory tests: the tiny example models, tiny configs pointed at temporary
folders, and one shared ``ddm`` adaptation run that later stages start from."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

FACTORY_ROOT = Path(__file__).resolve().parents[2] / "LLaMA-Factory"
EXAMPLES = FACTORY_ROOT / "examples"


def _example_script():
    spec = importlib.util.spec_from_file_location("make_tiny_models", EXAMPLES / "tiny" / "make_tiny_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """``gpt2/`` and ``llama/`` as written by examples/tiny/make_tiny_models.py."""
    root = tmp_path_factory.mktemp("tiny_models")
    _example_script().write_tiny_models(root)
    return root


@pytest.fixture(scope="session")
def datasets_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("datasets_cache")


def tiny_config(name: str, models: Path, output_dir: Path, cache_dir: Path, **overrides: Any) -> dict[str, Any]:
    """An examples/tiny config with its model, output and cache paths moved to the test's folders."""
    from llamafactory.hparams import read_args

    config = read_args([str(EXAMPLES / "tiny" / name)])
    config["model_name_or_path"] = str(models / Path(config["model_name_or_path"]).name)
    config["output_dir"] = str(output_dir)
    config["cache_dir"] = str(cache_dir)
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def ddm_run(tiny_models, datasets_cache, tmp_path_factory) -> Path:
    """The output folder of examples/tiny/gpt2_ddm.yaml (30 steps, annealing over 10, eval, plot)."""
    from llamafactory.train import run_exp

    output = tmp_path_factory.mktemp("runs") / "gpt2-ddm"
    run_exp(tiny_config("gpt2_ddm.yaml", tiny_models, output, datasets_cache))
    return output
