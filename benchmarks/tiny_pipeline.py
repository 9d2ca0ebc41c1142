"""The tiny example pipeline's scripts (``LLaMA-Factory/examples/tiny/pipeline``) as modules, for the benchmarks.

The pipeline is a folder of scripts, not a package: each is imported by path, once, under the name
``tiny_pipeline_<name>`` that the pipeline's other users give it too.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from llamafactory.utils.scripts import import_script

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "LLaMA-Factory" / "examples" / "tiny" / "pipeline"


def pipeline_module(name: str) -> ModuleType:
    """``examples/tiny/pipeline/<name>.py`` as a module."""
    return import_script(PIPELINE / f"{name}.py", f"tiny_pipeline_{name}")
