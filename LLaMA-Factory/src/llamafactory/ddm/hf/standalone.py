"""The modeling code of a self-contained export (docs/design.md#hf-native-format), written out at export
time from the core's own modules, so the folder loads with ``trust_remote_code=True`` where this package
is not installed, and no second copy of the sampler is kept by hand.

The modules the two entry files import inside the package are collected transitively and written side by
side (transformers' remote-code loader wants one flat folder); each import of another package module
becomes ``from .<module> import ...``. What is left depends on torch and transformers only.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from ... import __version__

PACKAGE = __name__.split(".")[0]
CONFIG_MODULE = f"{PACKAGE}.ddm.hf.configuration_diffusion"
MODELING_MODULE = f"{PACKAGE}.ddm.hf.modeling_diffusion"
# The Auto classes a self-contained config.json maps to its classes (AutoConfig apart).
REMOTE_AUTO_CLASSES = ("AutoModel", "AutoModelForMaskedLM", "AutoModelForCausalLM")


def _flat_name(module: str) -> str:
    return module.rpartition(".")[2]


def _imported_module(node: ast.ImportFrom, module: str) -> str | None:
    """The package module an import names (resolved from ``module``), or None for another package's."""
    if node.level == 0:
        return node.module if (node.module or "").split(".")[0] == PACKAGE else None
    if node.module is None:
        raise ValueError(f"{module}: `from {'.' * node.level} import ...` cannot be flattened; import from the module")
    return importlib.util.resolve_name("." * node.level + node.module, module.rpartition(".")[0])


def _flattened(module: str) -> tuple[str, list[str]]:
    """A module's source with its package imports made flat, and the package modules it imports."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or spec.submodule_search_locations is not None:
        raise ValueError(f"{module} is not a module file; import what is needed from the module that defines it")
    source = Path(spec.origin).read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    imported = []
    for node in sorted(ast.walk(ast.parse(source)), key=lambda n: -getattr(n, "lineno", 0)):
        if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == PACKAGE for alias in node.names):
            raise ValueError(f"{module}:{node.lineno}: use `from ... import` for package modules")
        if not isinstance(node, ast.ImportFrom) or (target := _imported_module(node, module)) is None:
            continue
        names = ", ".join(alias.name + (f" as {alias.asname}" if alias.asname else "") for alias in node.names)
        indent = lines[node.lineno - 1][: node.col_offset]
        lines[node.lineno - 1 : node.end_lineno] = [f"{indent}from .{_flat_name(target)} import {names}\n"]
        imported.append(target)
    header = f"# Written by `llamafactory-cli export` ({PACKAGE} {__version__}) from {module}.\n"
    return header + "".join(lines), imported


def modeling_sources() -> dict[str, str]:
    """File name -> source of every module the config and modeling files need, flattened."""
    sources: dict[str, str] = {}
    origins: dict[str, str] = {}
    pending = [CONFIG_MODULE, MODELING_MODULE]
    while pending:
        module = pending.pop()
        file_name = _flat_name(module) + ".py"
        if file_name in origins:
            if origins[file_name] != module:
                raise ValueError(f"{module} and {origins[file_name]} would both be written as {file_name}")
            continue
        sources[file_name], imported = _flattened(module)
        origins[file_name] = module
        pending.extend(imported)
    return sources


def auto_map(config_class: type, model_class: type) -> dict[str, str]:
    """config.json's ``auto_map``: where transformers finds the written classes."""
    model = f"{_flat_name(MODELING_MODULE)}.{model_class.__name__}"
    return {"AutoConfig": f"{_flat_name(CONFIG_MODULE)}.{config_class.__name__}",
            **{name: model for name in REMOTE_AUTO_CLASSES}}


def write_modeling_code(directory: Path) -> list[str]:
    """Write the flattened modules into ``directory``; returns their file names."""
    sources = modeling_sources()
    for file_name, source in sources.items():
        (directory / file_name).write_text(source, encoding="utf-8")
    return sorted(sources)
