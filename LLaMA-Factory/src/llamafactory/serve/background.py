"""A server on a free loopback port in a background thread, for tests, benchmarks and notebooks."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .app import create_app
from .limits import Limits


@dataclass
class Running:
    """Where the server answers, and its app."""

    url: str
    app: Any


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve_in_background(engine: Any, *, startup_timeout: float = 30.0, page: bool = False,
                        **limits: Any) -> Iterator[Running]:
    """Serve ``engine`` on 127.0.0.1 at a free port until the block ends (``limits`` are ``Limits`` fields;
    ``page`` adds the web chat page)."""
    import uvicorn

    port = free_port()
    app = create_app(engine, Limits(port=port, **limits), page=page)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"the server did not start within {startup_timeout:.0f} s")
        time.sleep(0.05)
    try:
        yield Running(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
