"""Request bodies in OpenAI's shapes (completions, chat completions). Fields the server does not model are
kept as extras: the diffusion sampler's settings, named as the schema names them (``ddm/settings.py``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# OpenAI fields accepted only at their neutral value (the sampler has no such knob).
NEUTRAL = {"presence_penalty": 0, "frequency_penalty": 0, "logprobs": None, "logit_bias": None, "best_of": None,
           "top_logprobs": None, "tools": None, "tool_choice": None, "response_format": None}


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Generation(BaseModel):
    """Fields both endpoints share; extras are sampler settings."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    trace: bool = False  # this server's extension: stream every reverse step's columns (the web page's view)

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [stop for stop in stops if stop]

    def extras(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class CompletionRequest(_Generation):
    prompt: str | list[str] | list[int] | list[list[int]]
    suffix: str | None = None
    echo: bool = False


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        """The message's text (content parts of type text joined)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")


class ChatRequest(_Generation):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
