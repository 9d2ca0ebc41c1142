"""Import a script that lives in a folder of scripts rather than a package (the example pipelines).

A script is executed once, under the given module name, and every later import of that name returns the
same module object, so that dataclasses and module state are shared by all its users.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def import_script(path: Path, name: str) -> ModuleType:
    """The script at ``path`` as the module ``name`` (imported on the first call, then reused)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python script")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
