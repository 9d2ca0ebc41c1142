"""The web chat page (``llamafactory-cli webchat``): one static page, served by the API app itself, that reads
the app's own streaming endpoints with ``trace: true`` and draws every reverse step. The page holds no model
logic: it sends the schema's settings as extra body fields and shows what the scheduler sends back, so its
answer is the API's answer for the same settings and seed."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from ..ddm.settings import SETTINGS
from .engine import DEFAULT_MAX_TOKENS, Engine

# The schema's settings the page offers a control for, in the order it shows them.
PAGE_SETTINGS = ("steps", "block_length", "strategy", "threshold", "temperature")


def page_config(engine: Engine) -> dict[str, Any]:
    """What the page needs to draw its controls: the checkpoint's defaults, the strategies, the window."""
    defaults = engine.defaults.sampler_arguments({})
    schema = {setting.name: setting for setting in SETTINGS}
    return {
        "model": engine.name,
        "defaults": {name: defaults.get(name) for name in PAGE_SETTINGS}
        | {"max_tokens": defaults.get("max_new_tokens") or DEFAULT_MAX_TOKENS},
        "help": {name: schema[name].help for name in PAGE_SETTINGS},
        "strategies": list(schema["strategy"].choices),
        "positions": engine.limit,
        "block_size": engine.model.block_size,
    }


def add_page(app: FastAPI, engine: Engine) -> None:
    """``GET /`` (the page) and ``GET /webchat/config`` (its controls' defaults)."""
    html = files(__package__).joinpath("webchat.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return html

    @app.get("/webchat/config", include_in_schema=False)
    async def config() -> dict[str, Any]:
        return page_config(engine)
