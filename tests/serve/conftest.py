"""A server on a free 127.0.0.1 port serving the bundled model, shared by the module's tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BUNDLED = Path(__file__).resolve().parents[2] / "assets" / "diffugpt-tiny"


@dataclass
class Running:
    url: str
    app: object


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def engine():
    from llamafactory.serve.launch import load_engine

    return load_engine([f"model_name_or_path={BUNDLED}"])


def start_server(engine, **limits) -> Iterator[Running]:
    import uvicorn

    from llamafactory.serve.app import create_app
    from llamafactory.serve.limits import Limits

    port = free_port()
    app = create_app(engine, Limits(port=port, **limits))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start within 30 s"
        time.sleep(0.05)
    yield Running(f"http://127.0.0.1:{port}", app)
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(engine) -> Iterator[Running]:
    yield from start_server(engine, max_batch=16, max_queue=64, timeout=120)
