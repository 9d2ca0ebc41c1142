"""The sampler's settings, each declared once (docs/design.md#sampler-settings).

``SETTINGS`` lists every setting the reverse loop reads: its name (a ``SamplingConfig`` field and a
``generate`` keyword), type, default, allowed values, one line of help and its other spellings (the
original's script and config names, the peers' names). ``SamplingConfig`` is built from it, and every
surface (command-line flags, ``do_predict`` keys, ``generate`` keywords, ``generation_config.json``,
lm-eval model arguments) derives its fields from it, so a setting is added by one entry here. Checking
happens in one place, ``Setting.check``, with one message per setting, whatever surface the value came in by.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import UserInputError
from .cache import CACHE_MODES
from .proposals import CONFIDENCE_DISTRIBUTIONS
from .strategies import CONFIDENCE_MEASURES, SCHEDULES, STRATEGIES, Rule, Strategy, as_rule

_F = TypeVar("_F", bound=Callable[..., Any])
_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a name", tuple: "token ids"}


@dataclass(frozen=True)
class Setting:
    """One sampler setting: what it is, what it may be, and how else it is spelled.

    ``kind`` is ``int``, ``float``, ``bool``, ``str`` (a name, one of ``choices``) or ``tuple`` (token
    ids). ``low`` / ``high`` bound a number (``low_open``: ``low`` itself is excluded); ``optional``:
    None is a value too (its meaning is in ``help``); ``note`` follows the range in the bad-value
    message. ``original`` is the original DiffuLLaMA code's spelling (its scripts, configs and messages
    use it); ``aliases`` are the peers' (LLaDA, Dream, Fast-dLLM) spellings.
    """

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    optional: bool = False
    note: str = ""
    original: str | None = None
    aliases: tuple[str, ...] = ()
    accepts_rule: bool = False  # a Python function (a custom rule, see strategies.Step) is a value too
    rule: str | None = None  # the strategy whose parameter this is
    label_override: str | None = None

    @property
    def label(self) -> str:
        """The name bad-value messages use: the original's spelling where there is one."""
        return self.label_override or self.original or self.name

    @property
    def spellings(self) -> tuple[str, ...]:
        """Every accepted name, this one first."""
        return (self.name, *((self.original,) if self.original else ()), *self.aliases)

    @property
    def annotation(self) -> Any:
        """The value's type as a field annotation."""
        kind: Any = tuple[int, ...] if self.kind is tuple else self.kind
        if self.accepts_rule:
            kind = kind | Strategy
        return kind | None if self.optional else kind

    def allowed(self) -> str:
        """What a value may be, in words (bad-value messages, help, the docs table)."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.low is None:
            return _KINDS[self.kind]
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        return f"in {'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}]"

    def problem(self, value: Any) -> str | None:
        """The one message for a bad ``value``, or None when it is usable."""
        if (value is None and self.optional) or (self.accepts_rule and callable(value)):
            return None
        if self.choices:
            ok = isinstance(value, str) and value in self.choices
            return None if ok else f"unknown {self.label} {value!r}; expected {self.allowed()}"
        if self.kind is bool:
            return None if isinstance(value, bool) else f"{self.label} must be true or false, got {value!r}"
        if self.kind is tuple:
            ok = isinstance(value, Sequence) and not isinstance(value, str) and all(
                isinstance(t, numbers.Integral) and not isinstance(t, bool) and t >= 0 for t in value)
            return None if ok else f"{self.label} must be token ids, got {value}"
        number = numbers.Integral if self.kind is int else numbers.Real
        ok = isinstance(value, number) and not isinstance(value, bool) and self._in_range(value)
        return None if ok else f"{self.label} must be {self.allowed()}{self.note}, got {value}"

    def _in_range(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        return above and (self.high is None or value <= self.high)

    def check(self, value: Any) -> None:
        """Raise ``UserInputError`` with this setting's message when ``value`` is unusable."""
        message = self.problem(value)
        if message is not None:
            raise UserInputError(message)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


SETTINGS: tuple[Setting, ...] = (
    Setting("steps", int, 64, "number of reverse steps T", low=1, original="diffusion_steps"),
    Setting("temperature", float, 0.95, "softmax temperature of the candidates (0: argmax)", low=0,
            note=" (0 means argmax)", original="logits_temp"),
    Setting("top_p", float, 0.9, "nucleus (top-p) mass of the candidates (none: off)", low=0, low_open=True, high=1,
            optional=True, original="topp_temp"),
    Setting("top_k", int, None, "keep only the k most likely candidates (none: off)", low=1, optional=True),
    Setting("greedy", bool, False, "take the argmax candidate instead of sampling it"),
    Setting("strategy", str, "random", "which masked positions to fix at each step", choices=tuple(STRATEGIES),
            original="decoding_strategy", accepts_rule=True),
    Setting("confidence", str, "prob", "confidence measure of the rules", choices=CONFIDENCE_MEASURES),
    Setting("confidence_distribution", str, "proposable",
            "distribution the confidence is read from: the candidates' own (proposable) or the full softmax (full)",
            choices=CONFIDENCE_DISTRIBUTIONS),
    Setting("schedule", str, "linear",
            "how many positions a quota step fixes: floor(n t / T) (linear), LLaDA's even split (llada), "
            "Dream's share of the masks left (dream)", choices=SCHEDULES),
    Setting("threshold", float, 0.9, "threshold rule: fix positions at least this confident", low=0, low_open=True,
            high=1, rule="threshold"),
    Setting("factor", float, 1.0, "factor rule: its factor f", low=0, low_open=True, rule="factor"),
    Setting("eb_gamma", float, 0.1, "eb rule: entropy budget per step (nats)", low=0, rule="eb"),
    Setting("block_length", int, None, "generate left to right in blocks of this many tokens (none: one block; a "
            "block model's own block_size, of which it must be a multiple)",
            low=1, optional=True, aliases=("block_size",)),
    Setting("cache", str, "auto", "key/value cache between steps (auto: block, the exact cache, for a block model, "
            "else none)", choices=CACHE_MODES),
    Setting("cache_refresh", int, None, "recompute the cache every N steps (none: at block starts only)", low=1,
            optional=True, note=" (leave it unset to refresh at block starts only)"),
    Setting("stop_at_eos", bool, False, "finish a row once its EOS is fixed and no mask precedes it"),
    Setting("suppress_tokens", tuple, (), "token ids never proposed"),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

# The length of a ``generate`` request (not a loop setting: ``sample`` fills the masks it is given).
MAX_NEW_TOKENS = Setting("max_new_tokens", int, None, "tokens generated after each prompt", low=1,
                         aliases=("gen_length",), label_override="max_new_tokens (gen_length)")
# Peers' rule names, resolved by ``strategies.resolve_rule``: Dream's ``alg``, LLaDA's ``remasking``; either
# replaces the defaults of these settings (the peer's rule, measure, schedule and confidence distribution).
_PEER_RULE = ("strategy", "confidence", "schedule", "confidence_distribution")
RULE_ALIASES: dict[str, tuple[str, ...]] = {"alg": _PEER_RULE, "remasking": _PEER_RULE}
# What ``generate`` takes: the request's length and every loop setting.
GENERATE_SETTINGS: tuple[Setting, ...] = (MAX_NEW_TOKENS, *SETTINGS)

# Every other spelling -> the setting's name, from the entries above.
ALIASES: dict[str, str] = {alias: s.name for s in (*SETTINGS, MAX_NEW_TOKENS) for alias in s.spellings[1:]}


def canonical(values: Mapping[str, Any], spelling: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``values`` keyed by setting name: a key is a name, an alias, or a surface's own key (``spelling`` maps a
    setting's name to it); two spellings of one setting must agree. Other keys are kept as they are."""
    names = {**ALIASES, **{key: name for name, key in (spelling or {}).items()}}
    named: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in values.items():
        name = names.get(key, key)
        if name in named and named[name] != value:
            first, second = (given_as[name], key) if key in ALIASES else (key, given_as[name])
            shown = {key: value, given_as[name]: named[name]}
            raise UserInputError(f"{first}={shown[first]} and its alias {second}={shown[second]} disagree; "
                                 "give one of them")
        named[name], given_as[name] = value, key
    return named


def check_settings(values: Mapping[str, Any]) -> None:
    """Check each named setting's value (in schema order, so the first bad one is reported)."""
    for s in SETTINGS:
        if s.name in values:
            s.check(values[s.name])


def with_settings(*, spelling: Mapping[str, str] | None = None, defaults: Mapping[str, Any] | None = None,
                  exclude: Iterable[str] = (), frozen: bool = False) -> Callable[[type], type]:
    """A dataclass decorator: one field per setting (in schema order, before the class's own fields), keyed as
    ``spelling`` says (default: the name), with ``defaults`` replacing the schema's; ``exclude`` names settings
    the class does not hold. Each field's metadata holds its setting and its help; ``settings()`` returns the
    values by setting name."""
    spelling, defaults, skipped = dict(spelling or {}), dict(defaults or {}), set(exclude)
    chosen = [s for s in SETTINGS if s.name not in skipped]

    def settings(self: Any) -> dict[str, Any]:
        return {s.name: getattr(self, spelling.get(s.name, s.name)) for s in chosen}

    def declare(cls: type) -> type:
        own = dict(cls.__dict__.get("__annotations__", {}))
        cls.__annotations__ = {**{spelling.get(s.name, s.name): s.annotation for s in chosen}, **own}
        for s in chosen:
            setattr(cls, spelling.get(s.name, s.name),
                    field(default=defaults.get(s.name, s.default), metadata={"setting": s, "help": s.help}))
        cls.settings = settings
        return dataclass(frozen=frozen)(cls)

    return declare


@with_settings(frozen=True)
class SamplingConfig:
    """The reverse loop's settings: one field per entry of ``SETTINGS`` (defaults: DiffuGPT's quick-start
    ones and the original one-block, no-cache loop), plus the model's ``shift`` and the caller's
    ``record_history``. ``validate`` checks every setting, for every entry point."""

    shift: bool = True
    record_history: bool = False

    def __post_init__(self) -> None:
        for s in SETTINGS:
            value = getattr(self, s.name)
            if s.kind is tuple and isinstance(value, list):
                object.__setattr__(self, s.name, tuple(value))

    def validate(self) -> None:
        """Raise ``UserInputError`` naming the first unusable setting (its message is ``Setting.problem``'s)."""
        check_settings(self.settings())

    def rule(self) -> Rule:
        return STRATEGIES[self.strategy] if isinstance(self.strategy, str) else as_rule(self.strategy)

    def as_dict(self) -> dict[str, object]:
        """How tokens are chosen, for result files (the step count, shift and history switch are the caller's)."""
        return {name: value for name, value in self.settings().items() if name != "steps"}


def takes_settings(settings: Sequence[Setting], extra: Mapping[str, Any] | None = None) -> Callable[[_F], _F]:
    """Decorator for a function taking ``**settings``: its signature gets one typed keyword per setting (the
    schema default) and per other spelling of it (default None: not given), then ``extra`` (name ->
    annotation, default None); its docstring gets the settings' lines of ``settings_help``."""

    def document(function: _F) -> _F:
        signature = inspect.signature(function)
        keyword = inspect.Parameter.KEYWORD_ONLY
        parameters = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        for s in settings:
            parameters.append(inspect.Parameter(s.name, keyword, default=s.default, annotation=s.annotation))
            parameters += [inspect.Parameter(a, keyword, default=None, annotation=s.annotation | None)
                           for a in s.spellings[1:]]
        parameters += [inspect.Parameter(n, keyword, default=None, annotation=t) for n, t in (extra or {}).items()]
        function.__signature__ = signature.replace(parameters=parameters)
        lines = "\n".join(f"    {line}" for line in settings_help(settings).splitlines())
        function.__doc__ = f"{function.__doc__ or ''}\n\n    Sampler settings:\n\n{lines}\n"
        return function

    return document


def settings_help(settings: Sequence[Setting] = SETTINGS) -> str:
    """One line per setting: its spellings, help, default and allowed values (docstrings, model cards)."""
    lines = []
    for s in settings:
        also = f" (also {', '.join(s.spellings[1:])})" if s.spellings[1:] else ""
        lines.append(f"``{s.name}``{also}: {s.help}; default {s.default!r}; {s.allowed()}")
    return "\n".join(lines)


def settings_table() -> str:
    """The settings as a Markdown table (docs/design.md#sampler-settings shows it; a test keeps the two equal)."""
    rows = ["| setting | other spellings | type | default | allowed | what it does |", "| --- | --- | --- | --- | --- | --- |"]
    for s in SETTINGS:
        also = ", ".join(f"`{name}`" for name in s.spellings[1:]) or "-"
        kind = s.kind.__name__ if s.kind is not tuple else "token ids"
        rows.append(f"| `{s.name}` | {also} | {kind}{' or none' if s.optional else ''} | `{s.default!r}` | "
                    f"{s.allowed()} | {s.help} |")
    return "\n".join(rows)
