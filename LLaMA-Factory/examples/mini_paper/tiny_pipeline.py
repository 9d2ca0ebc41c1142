"""The tiny pipeline's scripts that this pipeline reuses (``examples/tiny/pipeline``), imported by path.

The example pipelines are folders of scripts, not packages; a script is imported once, under the private
name ``tiny_pipeline_<name>``, so that every user of it shares one module object.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

FOLDER = Path(__file__).resolve().parents[1] / "tiny" / "pipeline"


def tiny_module(name: str) -> ModuleType:
    """``examples/tiny/pipeline/<name>.py`` as a module."""
    qualified = f"tiny_pipeline_{name}"
    if qualified not in sys.modules:
        spec = importlib.util.spec_from_file_location(qualified, FOLDER / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[qualified]
