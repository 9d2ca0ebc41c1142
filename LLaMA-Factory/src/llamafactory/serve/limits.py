"""The server's address and limits, from environment variables (README: "Serving")."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UserInputError


def _integer(name: str, default: int, low: int) -> int:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise UserInputError(f"{name} must be an integer >= {low}, got {text!r}")
    return value


def _number(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise UserInputError(f"{name} must be a number of seconds > 0, got {text!r}")
    return value


@dataclass(frozen=True)
class Limits:
    """Where the server listens and how much it takes on.

    ``host`` defaults to 127.0.0.1 (upstream LLaMA-Factory binds every interface): a model server without a
    key should not be reachable from the network unless someone asks for that (``API_HOST=0.0.0.0``).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    model_name: str | None = None  # the id /v1/models lists (default: the checkpoint's folder name)
    max_batch: int = 32  # rows generated together, over every cohort
    max_queue: int = 256  # rows waiting for a place in the batch; more gives 429
    timeout: float = 600.0  # seconds a request may take, queueing included
    max_body: int = 1 << 20  # bytes of a request body; more gives 413

    @classmethod
    def from_env(cls, port: int | None = None) -> Limits:
        """The limits the environment sets; ``port`` is the default port (8000 for ``api``, 7860 for
        ``webchat``)."""
        return cls(
            host=os.environ.get("API_HOST") or cls.host,
            port=_integer("API_PORT", port or cls.port, 1),
            api_key=os.environ.get("API_KEY") or None,
            model_name=os.environ.get("API_MODEL_NAME") or None,
            max_batch=_integer("API_MAX_BATCH", cls.max_batch, 1),
            max_queue=_integer("API_MAX_QUEUE", cls.max_queue, 1),
            timeout=_number("API_TIMEOUT", cls.timeout),
            max_body=_integer("API_MAX_BODY", cls.max_body, 1),
        )
