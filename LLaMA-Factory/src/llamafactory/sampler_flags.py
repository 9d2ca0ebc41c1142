"""The sampler's command-line flags, derived from the settings schema (docs/design.md#sampler-settings) and
shared by the quick-start scripts and the evaluation scripts.

A surface describes its flags once (``SamplerFlags``: which settings, under which primary flag name); every
other spelling of a setting is accepted as a further option string. Values are parsed to the setting's type
here and checked by ``SamplingConfig.validate``, so a bad value gets the schema's one message.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .ddm.settings import SETTINGS, Setting
from .entry_points import add_bool_flag, bool_word

# The original quick-start scripts' flag names (``decoding_strategy`` was a config key only: the flag is
# ``--strategy``).
SCRIPT_FLAGS = {s.name: s.original for s in SETTINGS if s.original and s.name != "strategy"}


def parse_setting(setting: Setting, text: Any) -> Any:
    """A command-line or ``key=value`` string as ``setting``'s type; text that does not parse is kept, so that
    the check reports it with the setting's own message."""
    if not isinstance(text, str):
        return text
    word = text.strip().lower()
    if setting.optional and word in ("none", "null", ""):
        return None
    if setting.kind is bool:
        value = bool_word(word)
        return text if value is None else value
    if setting.kind is tuple:
        parts = text.replace(",", " ").split()
        return tuple(int(part) for part in parts) if all(part.isdigit() for part in parts) else text
    if setting.kind in (int, float):
        try:
            return setting.kind(text)
        except ValueError:
            return text
    return text


@dataclass(frozen=True)
class SamplerFlags:
    """A command line's sampler flags: one per setting but ``exclude``, named ``--<spelling[name]>`` (default
    ``--<name>``), each other spelling an alias of it; ``dest`` is the primary name."""

    spelling: Mapping[str, str] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()

    def entries(self) -> list[tuple[str, Setting]]:
        return [(self.spelling.get(s.name, s.name), s) for s in SETTINGS if s.name not in self.exclude]

    def add_to(self, parser: Any, *, defaults: Mapping[str, Any] | None,
               default_notes: Mapping[str, str] | None = None) -> None:
        """Add the flags. ``defaults`` None: an unset flag is None (the surface applies its own defaults, which
        the help names from ``default_notes``, else the schema default); otherwise each flag defaults to the
        schema's default replaced by ``defaults``."""
        notes = dict(default_notes or {})
        for key, s in self.entries():
            options = [f"--{key}", *(f"--{name}" for name in s.spellings if name != key)]
            default = None if defaults is None else defaults.get(s.name, s.default)
            text = s.help if defaults is not None else f"{s.help} (default {notes.get(s.name, _shown(s.default))})"
            if s.kind is bool:
                add_bool_flag(parser, options[0], default, text, *options[1:])
                continue
            metavar = "{" + ",".join(s.choices) + "}" if s.choices else key.upper()
            parser.add_argument(*options, dest=key, type=lambda text, s=s: parse_setting(s, text), default=default,
                                metavar=metavar, help=text)

    def values(self, args: argparse.Namespace, *, given_only: bool = False) -> dict[str, Any]:
        """The flags' values by setting name (``given_only``: only those not None, i.e. the user set)."""
        values = {s.name: getattr(args, key) for key, s in self.entries()}
        return {name: value for name, value in values.items() if value is not None or not given_only}


def _shown(value: Any) -> str:
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
