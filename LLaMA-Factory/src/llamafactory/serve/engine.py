"""What a request asks the model for, row by row: tokens in, the request's sampler settings (the checkpoint's
generation_config.json, replaced by the request's fields), and the text a row's fixed tokens read as.

One *job* is one row of the reverse loop: one prompt, one choice. Its columns are
``[left padding][prompt][max_tokens masks][suffix]``; the prompt is padded to a multiple of
``PROMPT_BUCKET`` columns so that rows of similar prompts can share a forward, and the padding depends on the
request alone, so a row's inputs are the same whatever it is batched with.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..ddm import DiffusionLM, position_limit, start_token_id, with_start_token
from ..ddm.generate import sampler_config
from ..ddm.hf import DiffusionGenerationConfig
from ..ddm.settings import SamplingConfig
from ..errors import UserInputError

PROMPT_BUCKET = 16
DEFAULT_MAX_TOKENS = 16  # OpenAI's default, when the checkpoint records none


@dataclass
class Update:
    """A row's text so far (only the part that can no longer change), and once done why it ended."""

    text: str
    finish_reason: str | None = None  # "stop" (EOS or a stop string) or "length"
    completion_tokens: int = 0
    nfe: int = 0
    step: int = 0  # reverse steps this row has taken
    tokens: list[int] | None = None  # every generated column, masks included (only for a traced job)


@dataclass
class Job:
    """One row: its tokens, settings and seed; ``sink`` receives its updates, or the error that ended it (on
    the worker thread)."""

    prompt: list[int]
    suffix: list[int]
    new_tokens: int
    config: SamplingConfig
    seed: int
    stops: list[str]
    width: int  # prompt columns, padding included
    trace: bool = False  # send every step's columns, not only the settled text (the web page draws them)
    steps_taken: int = 0
    sink: Callable[[Update | Exception], None] = lambda update: None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def layout(self, mask_id: int) -> tuple[list[int], list[int], list[bool]]:
        """``(ids, attention, given)`` of the row's columns."""
        pad = self.width - len(self.prompt)
        fill = 1 if mask_id == 0 else 0
        ids = [fill] * pad + self.prompt + [mask_id] * self.new_tokens + self.suffix
        attention = [0] * pad + [1] * (len(ids) - pad)
        given = [True] * (self.width) + [False] * self.new_tokens + [True] * len(self.suffix)
        return ids, attention, given


class Engine:
    """The model, its tokenizer and sampler defaults; turns request fields into jobs and tokens into text."""

    def __init__(self, model: DiffusionLM, tokenizer: Any, name: str, defaults: DiffusionGenerationConfig) -> None:
        self.model, self.tokenizer, self.name, self.defaults = model, tokenizer, name, defaults
        self.limit = position_limit(model.config)
        start_token_id(tokenizer)  # a tokenizer with neither BOS nor EOS is refused at load, not per request
        self.end_ids = model.tokens.end_ids

    @classmethod
    def load(cls, model: DiffusionLM, tokenizer: Any, checkpoint: str, name: str | None = None,
             overrides: dict[str, Any] | None = None) -> Engine:
        """Defaults from the checkpoint's generation_config.json (the schema's where it has none), replaced by
        ``overrides`` (the serving config's sampler keys, any spelling); a bad one is refused here, at start."""
        path = Path(checkpoint)
        if (path / "generation_config.json").is_file():
            defaults = DiffusionGenerationConfig.adopt(DiffusionGenerationConfig.from_pretrained(path))
        else:
            defaults = DiffusionGenerationConfig()
        engine = cls(model, tokenizer, name or path.name or str(checkpoint), defaults)
        if overrides:
            values = defaults.sampler_arguments(overrides)
            engine.settings(values.get("max_new_tokens"), values)
            engine.defaults = DiffusionGenerationConfig.from_settings(values)
        return engine

    def settings(self, max_tokens: int | None, fields: dict[str, Any]) -> tuple[int, SamplingConfig]:
        """``(max_tokens, SamplingConfig)``: the checkpoint's defaults replaced by the request's fields (any
        spelling of a setting); one error line naming a bad or unknown field."""
        fields = {key: value for key, value in fields.items() if value is not None}
        if max_tokens is not None:
            fields["max_new_tokens"] = max_tokens
        values = self.defaults.sampler_arguments(fields)
        if values.get("max_new_tokens") is None:
            values["max_new_tokens"] = DEFAULT_MAX_TOKENS
        try:
            return sampler_config(values, shift=self.model.shift)
        except TypeError as error:
            name = str(error).rsplit(" ", 1)[-1]
            raise UserInputError(f"unknown field {name}; expected OpenAI's fields or a sampler setting") from None

    def prompt_ids(self, prompt: str | Sequence[int]) -> list[int]:
        """The start token and the prompt's tokens."""
        ids = list(prompt) if not isinstance(prompt, str) else self.tokenizer.encode(prompt, add_special_tokens=False)
        if not ids:
            raise UserInputError("the prompt is empty; give at least one token of text")
        return with_start_token(self.tokenizer, ids)

    def jobs(self, prompts: Sequence[str | Sequence[int]], *, suffix: str | None, n: int, seed: int | None,
             stops: list[str], max_tokens: int | None, fields: dict[str, Any], trace: bool = False) -> list[list[Job]]:
        """The rows of a request, ``n`` per prompt (choice ``i`` of prompt ``p`` draws from seed + p n + i)."""
        new_tokens, config = self.settings(max_tokens, fields)
        if len(stops) > 4:
            raise UserInputError(f"stop takes at most 4 strings, got {len(stops)}")
        if suffix and self.model.block_size is not None:
            raise UserInputError(f"suffix (infilling) needs a full-sequence diffusion model; this one is block-causal "
                                 f"(block_size={self.model.block_size}), so no block would see the suffix")
        suffix_ids = self.tokenizer.encode(suffix, add_special_tokens=False) if suffix else []
        base = secrets.randbits(62) if seed is None else seed
        rows = []
        for p, prompt in enumerate(prompts):
            ids = self.prompt_ids(prompt)
            needed = len(ids) + new_tokens + len(suffix_ids)
            if self.limit is not None and needed > self.limit:
                raise UserInputError(f"prompt ({len(ids)} tokens) + max_tokens ({new_tokens}) + suffix "
                                     f"({len(suffix_ids)} tokens) = {needed} exceeds the model's {self.limit} positions")
            width = -(-len(ids) // PROMPT_BUCKET) * PROMPT_BUCKET
            if self.limit is not None:
                width = min(width, self.limit - new_tokens - len(suffix_ids))
            rows.append([Job(ids, suffix_ids, new_tokens, config, base + p * n + i, list(stops), width, trace)
                         for i in range(n)])
        return rows

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(self.model.device).manual_seed(seed % (1 << 63))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def pieces(self, ids: Sequence[int]) -> list[str | None]:
        """Each column's own text, ``None`` where it is still masked (what the web page draws)."""
        return [None if token == self.model.mask_id else self.decode([token]) for token in ids]

    def read(self, job: Job, generated: Sequence[int], done: bool) -> Update:
        """What a row's generated columns say: the text of its fixed prefix (up to the first mask, end token or
        stop string; end tokens are EOS and PAD), finished when an end token or stop string is fixed or every
        position is. While unfinished, text that
        may still turn into a stop string or an incomplete character is held back."""
        mask_id = self.model.mask_id
        prefix = list(generated)
        if mask_id in prefix:
            prefix, done = prefix[: prefix.index(mask_id)], False
        reason = "length" if done else None
        end = next((at for at, token in enumerate(prefix) if token in self.end_ids), None)
        if end is not None:
            prefix, reason = prefix[:end], "stop"
        text = self.decode(prefix)
        cut = min((at for at in (text.find(stop) for stop in job.stops) if at >= 0), default=-1)
        if cut >= 0:
            text, reason = text[:cut], "stop"
        if reason is None:
            return Update(text=_settled(text, job.stops))
        return Update(text=text, finish_reason=reason, completion_tokens=self._count(prefix, text))

    def _count(self, prefix: list[int], text: str) -> int:
        """Tokens of ``prefix`` the completion ``text`` uses (all of them unless a stop string cut it)."""
        if len(self.decode(prefix)) == len(text):
            return len(prefix)
        return next(k for k in range(len(prefix) + 1) if len(self.decode(prefix[:k])) >= len(text))


def _settled(text: str, stops: list[str]) -> str:
    """``text`` without a trailing partial character or a tail that could begin a stop string."""
    text = text.rstrip("\ufffd")
    hold = max((k for stop in stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)
    return text[: len(text) - hold]
