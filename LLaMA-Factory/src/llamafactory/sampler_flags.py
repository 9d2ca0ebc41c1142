"""The sampler's command-line flags, shared by the quick-start scripts and the evaluation scripts
(docs/design.md#fast-generation). Values are checked by ``SamplingConfig.validate``, not here."""

from __future__ import annotations

import argparse
from typing import Any

from .command_line import add_bool_flag
from .ddm.cache import CACHE_MODES
from .ddm.sampling import SamplingConfig
from .ddm.strategies import CONFIDENCE_MEASURES, STRATEGIES

_DEFAULT = SamplingConfig()
FAST_GENERATION_FLAGS = ("block_length", "confidence", "threshold", "factor", "eb_gamma", "cache", "cache_refresh",
                         "stop_at_eos")


def add_sampler_arguments(parser: Any, *, strategy_default: str | None, strategy_help: str) -> None:
    """``--strategy`` and the fast-generation flags; an unset fast-generation flag is None (core default)."""
    parser.add_argument("--strategy", choices=list(STRATEGIES), default=strategy_default, help=strategy_help)
    parser.add_argument("--confidence", choices=CONFIDENCE_MEASURES, default=None,
                        help=f"confidence measure of the rules (default {_DEFAULT.confidence})")
    parser.add_argument("--block_length", type=int, default=None,
                        help="generate left to right in blocks of this many tokens (default: one block)")
    parser.add_argument("--threshold", type=float, default=None,
                        help=f"threshold rule: fix positions at least this confident (default {_DEFAULT.threshold})")
    parser.add_argument("--factor", type=float, default=None, help=f"factor rule: f (default {_DEFAULT.factor})")
    parser.add_argument("--eb_gamma", type=float, default=None,
                        help=f"eb rule: entropy budget per step in nats (default {_DEFAULT.eb_gamma})")
    parser.add_argument("--cache", choices=CACHE_MODES, default=None, help="key/value cache (default none)")
    parser.add_argument("--cache_refresh", type=int, default=None,
                        help="recompute the cache every N steps (default: at block starts only)")
    add_bool_flag(parser, "--stop_at_eos", None, "finish a row once its EOS is fixed (default false)")


def fast_generation_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The fast-generation flags the user set, as ``SamplingConfig`` fields."""
    return {name: getattr(args, name) for name in FAST_GENERATION_FLAGS if getattr(args, name, None) is not None}
