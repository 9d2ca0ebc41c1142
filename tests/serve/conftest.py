"""A server on a free 127.0.0.1 port serving the bundled model, shared by the module's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llamafactory.serve.background import Running, serve_in_background

BUNDLED = Path(__file__).resolve().parents[2] / "assets" / "diffugpt-tiny"


@pytest.fixture(scope="session")
def engine():
    from llamafactory.serve.launch import load_engine

    return load_engine([f"model_name_or_path={BUNDLED}"])


@pytest.fixture(scope="module")
def server(engine) -> Iterator[Running]:
    with serve_in_background(engine, max_batch=16, max_queue=64, timeout=120) as running:
        yield running
