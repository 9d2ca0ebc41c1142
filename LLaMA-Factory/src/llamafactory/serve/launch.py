"""``llamafactory-cli api`` / ``chat``: the model a config names (the ``train`` config's model keys), served
over HTTP or in a terminal chat."""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any

from ..hparams.generating_args import CONFIG_KEYS, GeneratingArguments
from ..hparams.model_args import ModelArguments
from ..hparams.parser import _known_fields, _reject_unknown_keys, _rename_legacy_keys, coerce_value, read_args
from .engine import Engine
from .limits import Limits

logger = logging.getLogger(__name__)


def config_arguments(argv: list[str]) -> tuple[ModelArguments, dict[str, Any]]:
    """The model keys of ``CONFIG.yaml [key=value ...]`` and its sampler keys (``do_predict``'s, e.g.
    ``diffusion_steps``, ``decoding_strategy``, ``threshold``), which replace the checkpoint's
    generation_config.json defaults; a training config's other keys are accepted and unused."""
    config = _rename_legacy_keys(read_args(argv))
    known = _known_fields()
    _reject_unknown_keys(config, known)
    names = {item.name for item in fields(ModelArguments)}
    model = ModelArguments(**{key: coerce_value(key, value, known[key][1]) for key, value in config.items()
                              if key in names})
    sampler = {key: coerce_value(key, value, known[key][1]) for key, value in config.items()
               if known[key][0] is GeneratingArguments or key == STEPS_KEY}
    return model, sampler


def load_engine(argv: list[str], name: str | None = None) -> Engine:
    import torch

    from ..ddm import load_diffusion_lm
    from ..errors import UserInputError

    args, sampler = config_arguments(argv)
    source = args.checkpoint_dir or args.model_name_or_path
    if not source:
        raise UserInputError("the config names no model: set model_name_or_path (and checkpoint_dir for a ddm checkpoint)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_diffusion_lm(
        source, base_model=args.model_name_or_path if args.checkpoint_dir else None, adapters=args.adapters or None,
        attn_implementation=args.attn_implementation, device=device, trust_remote_code=args.trust_remote_code)
    model.eval()
    return Engine.load(model, tokenizer, source, name, overrides=sampler)


STEPS_KEY = CONFIG_KEYS["steps"]  # a finetuning key of the config, and the sampler's steps
WEBCHAT_PORT = 7860  # upstream's webchat port


def serve(argv: list[str], page: bool = False) -> None:
    """``api`` (``page=False``) or ``webchat``: the same app and scheduler, the latter also serving the page."""
    import uvicorn

    from .app import create_app

    limits = Limits.from_env(port=WEBCHAT_PORT if page else None)
    engine = load_engine(argv, limits.model_name)
    logger.warning("serving %s on http://%s:%d%s (API key %s)", engine.name, limits.host, limits.port,
                   " (web chat at /)" if page else "", "required" if limits.api_key else "not required")
    uvicorn.run(create_app(engine, limits, page=page), host=limits.host, port=limits.port, log_level="info")


def chat(argv: list[str], settings: dict[str, Any] | None = None) -> None:
    from .chat import terminal_chat

    terminal_chat(load_engine(argv), settings or {})
