"""The HTTP face: OpenAI's endpoints translated into jobs for the scheduler and its updates back into
OpenAI's responses and stream chunks. Nothing here touches the model; the event loop only waits."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from ..errors import UserInputError
from .chat import chat_prompt
from .engine import Engine, Job, Update
from .limits import Limits
from .protocol import NEUTRAL, ChatRequest, CompletionRequest
from .scheduler import QueueFull, Scheduler


class APIError(Exception):
    """An error answered in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class BodyLimit:
    """ASGI middleware: a body beyond ``limit`` bytes gets 413 before it is parsed."""

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = APIError(413, f"the request body exceeds {self.limit} bytes", code="body_too_large").response()
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_big(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise APIError(413, f"the request body exceeds {self.limit} bytes", code="body_too_large")
            return message

        try:
            await self.app(scope, counted, send)
        except APIError as error:
            await error.response()(scope, receive, send)


@dataclass
class _Choice:
    sent: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0
    nfe: int = 0


class _Flight:
    """One request's jobs in flight: their updates, carried from the worker thread to the event loop."""

    def __init__(self, jobs: list[Job], timeout: float) -> None:
        self.jobs, self.choices = jobs, [_Choice() for _ in jobs]
        self.queue: asyncio.Queue[tuple[int, Update | Exception]] = asyncio.Queue()
        self.deadline = asyncio.get_running_loop().time() + timeout
        loop = asyncio.get_running_loop()
        for index, job in enumerate(jobs):
            job.sink = lambda update, index=index: loop.call_soon_threadsafe(self.queue.put_nowait, (index, update))

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancelled.set()

    async def deltas(self, request: Request) -> AsyncIterator[tuple[int, str, Update]]:
        """``(choice, new text, update)`` as rows progress, until every choice is finished; a traced row
        yields every step, others only when their text grows or ends."""
        loop = asyncio.get_running_loop()
        unfinished = len(self.jobs)
        try:
            while unfinished:
                left = self.deadline - loop.time()
                if left <= 0:
                    raise APIError(504, "the request took longer than the server's timeout (API_TIMEOUT)",
                                   kind="timeout", code="timeout")
                try:
                    index, update = await asyncio.wait_for(self.queue.get(), timeout=min(left, 0.5))
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
                    continue
                if isinstance(update, Exception):
                    if isinstance(update, UserInputError):
                        raise APIError(400, str(update))
                    raise APIError(500, "generation failed; see the server log", kind="server_error")
                choice = self.choices[index]
                if choice.finish_reason is not None:
                    continue
                delta = update.text[len(choice.sent):] if update.text.startswith(choice.sent) else ""
                choice.sent += delta
                if update.finish_reason is not None:
                    choice.finish_reason, choice.nfe = update.finish_reason, update.nfe
                    choice.completion_tokens = update.completion_tokens
                    unfinished -= 1
                if delta or update.finish_reason is not None or update.tokens is not None:
                    yield index, delta, update
        finally:
            self.cancel()


def create_app(engine: Engine, limits: Limits, page: bool = False) -> FastAPI:
    """The FastAPI application; its lifespan starts and stops the scheduler's worker thread. With ``page`` it
    also serves the web chat page at ``/`` (``llamafactory-cli webchat``)."""
    scheduler = Scheduler(engine, max_batch=limits.max_batch, max_queue=limits.max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        yield
        await asyncio.to_thread(scheduler.stop)

    app = FastAPI(title="llamafactory ddm server", lifespan=lifespan)
    app.state.scheduler = scheduler
    app.add_middleware(BodyLimit, limit=limits.max_body)

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return error.response()

    @app.exception_handler(UserInputError)
    async def user_error(request: Request, error: UserInputError) -> JSONResponse:
        return APIError(400, str(error)).response()

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = [str(part) for part in first.get("loc", ()) if part != "body"]
        message = f"{'.'.join(where) or 'body'}: {first.get('msg', 'invalid request body')}"
        return APIError(422, message, param=".".join(where) or None).response()

    async def authorized(request: Request) -> None:
        if limits.api_key is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), limits.api_key.encode()):
            raise APIError(401, "a missing or wrong API key (send Authorization: Bearer KEY)",
                           code="invalid_api_key")

    def check(body: CompletionRequest | ChatRequest) -> None:
        if body.model is not None and body.model != engine.name:
            raise APIError(404, f"unknown model {body.model!r}; this server serves {engine.name!r}",
                           param="model", code="model_not_found")
        if body.trace and not body.stream:
            raise APIError(400, "trace streams every step; it needs stream: true", param="trace")
        extras = body.extras()
        for name, neutral in NEUTRAL.items():
            if extras.get(name, neutral) not in (neutral, None):
                raise APIError(400, f"{name} is not supported by the diffusion sampler", param=name)
            extras.pop(name, None)

    def fields(body: CompletionRequest | ChatRequest) -> dict[str, Any]:
        extras = {key: value for key, value in body.extras().items() if key not in NEUTRAL}
        return {**extras, "temperature": body.temperature, "top_p": body.top_p}

    async def serve(request: Request, rows: list[list[Job]], body: CompletionRequest | ChatRequest,
                    prompt_tokens: int, chunk: Callable[[int, str, str | None], dict],
                    whole: Callable[[list[str], list[_Choice]], list[dict]], kind: str,
                    opening: list[str]) -> Any:
        jobs = [job for prompt_jobs in rows for job in prompt_jobs]
        try:
            scheduler.submit(jobs)
        except QueueFull as error:
            raise APIError(429, f"the server is busy: {error}; retry shortly", kind="rate_limit_error",
                           code="queue_full", headers={"Retry-After": "1"}) from None
        flight = _Flight(jobs, limits.timeout)
        head = {"id": f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time()),
                "model": engine.name}

        def usage() -> dict[str, int]:
            completion = sum(choice.completion_tokens for choice in flight.choices)
            return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                    "total_tokens": prompt_tokens + completion}

        if not body.stream:
            texts = list(opening)
            async for index, delta, _update in flight.deltas(request):
                texts[index] += delta
            if any(choice.finish_reason is None for choice in flight.choices):
                raise APIError(499, "the client went away", code="client_closed")
            return {**head, "object": "chat.completion" if kind == "chat" else "text_completion",
                    "choices": whole(texts, flight.choices), "usage": usage()}
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        object_name = "chat.completion.chunk" if kind == "chat" else "text_completion"

        async def events() -> AsyncIterator[dict[str, str]]:
            try:
                for index, text in enumerate(opening):
                    yield {"data": json.dumps({**head, "object": object_name, "choices": [chunk(index, text, None)]})}
                async for index, delta, update in flight.deltas(request):
                    piece = chunk(index, delta, update.finish_reason)
                    if update.finish_reason is not None:
                        piece["nfe"] = flight.choices[index].nfe
                    if update.tokens is not None:
                        piece["denoise"] = {"step": update.step, "nfe": update.nfe,
                                            "tokens": engine.pieces(update.tokens)}
                    yield {"data": json.dumps({**head, "object": object_name, "choices": [piece]})}
                if include_usage:
                    yield {"data": json.dumps({**head, "object": object_name, "choices": [], "usage": usage()})}
            except APIError as error:
                yield {"data": json.dumps({"error": {"message": error.message, "type": error.kind,
                                                      "param": error.param, "code": error.code}})}
            finally:
                flight.cancel()
            yield {"data": "[DONE]"}

        return EventSourceResponse(events(), ping=15)

    if page:
        from .page import add_page

        add_page(app, engine)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": engine.name, "live_rows": scheduler.live_rows(),
                "waiting_rows": len(scheduler.waiting)}

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": 0,
                                            "owned_by": "llamafactory"}]}

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def completions(body: CompletionRequest, request: Request) -> Any:
        check(body)
        prompts = _prompts(body.prompt)
        rows = engine.jobs(prompts, suffix=body.suffix, n=body.n, seed=body.seed, stops=body.stops(),
                           max_tokens=body.max_tokens, fields=fields(body), trace=body.trace)
        prompt_tokens = sum(len(prompt_jobs[0].prompt) + len(prompt_jobs[0].suffix) for prompt_jobs in rows)
        opening = [(prompt if isinstance(prompt, str) else engine.decode(prompt)) if body.echo else ""
                   for prompt in prompts for _ in range(body.n)]

        def chunk(index: int, text: str, reason: str | None) -> dict:
            return {"index": index, "text": text, "finish_reason": reason, "logprobs": None}

        def whole(texts: list[str], choices: list[_Choice]) -> list[dict]:
            return [{**chunk(i, text, choice.finish_reason), "nfe": choice.nfe}
                    for i, (text, choice) in enumerate(zip(texts, choices))]

        return await serve(request, rows, body, prompt_tokens, chunk, whole, "text", opening)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        check(body)
        prompt = chat_prompt(engine.tokenizer, [(m.role, m.text()) for m in body.messages])
        rows = engine.jobs([prompt], suffix=None, n=body.n, seed=body.seed, stops=body.stops(),
                           max_tokens=body.max_completion_tokens or body.max_tokens, fields=fields(body),
                           trace=body.trace)

        def chunk(index: int, text: str, reason: str | None) -> dict:
            return {"index": index, "delta": {"role": "assistant", "content": text} if text or reason is None
                    else {}, "finish_reason": reason, "logprobs": None}

        def whole(texts: list[str], choices: list[_Choice]) -> list[dict]:
            return [{"index": i, "message": {"role": "assistant", "content": text},
                     "finish_reason": choice.finish_reason, "logprobs": None, "nfe": choice.nfe}
                    for i, (text, choice) in enumerate(zip(texts, choices))]

        return await serve(request, rows, body, len(rows[0][0].prompt), chunk, whole, "chat", [""] * body.n)

    return app


def _prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """OpenAI's prompt forms: a string, strings, a token array, token arrays."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise UserInputError("prompt is empty; give a string or a list of strings")
    if all(isinstance(item, int) for item in prompt):
        return [list(prompt)]
    return list(prompt)
