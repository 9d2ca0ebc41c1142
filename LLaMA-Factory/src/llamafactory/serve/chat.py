"""The chat face: messages -> one prompt (the tokenizer's chat template, else a plain one), and
``llamafactory-cli chat``, a terminal chat printing text as it becomes final."""

from __future__ import annotations

import queue
import sys
from collections.abc import Sequence
from typing import Any

from .engine import Engine, Update
from .scheduler import Scheduler

# Without a chat template: one "Role: text" line per message, then "Assistant:" for the reply.
PLAIN_ROLES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}


def chat_prompt(tokenizer: Any, messages: Sequence[tuple[str, str]]) -> str:
    """The prompt text of ``(role, text)`` messages, ending where the assistant's reply begins."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": role, "content": text} for role, text in messages],
                                             tokenize=False, add_generation_prompt=True)
    lines = [f"{PLAIN_ROLES[role]}: {text}" for role, text in messages]
    return "\n".join([*lines, "Assistant:"])


def reply(scheduler: Scheduler, messages: list[tuple[str, str]], fields: dict[str, Any], out: Any) -> str:
    """Generate the assistant's next message, writing each newly final piece to ``out``."""
    engine = scheduler.engine
    job = engine.jobs([chat_prompt(engine.tokenizer, messages)], suffix=None, n=1, seed=fields.get("seed"),
                      stops=["\nUser:"], max_tokens=fields.get("max_tokens"),
                      fields={k: v for k, v in fields.items() if k not in ("seed", "max_tokens")})[0][0]
    updates: queue.Queue[Update | Exception] = queue.Queue()
    job.sink = updates.put
    scheduler.submit([job])
    sent = ""
    while True:
        update = updates.get()
        if isinstance(update, Exception):
            raise update
        if update.text.startswith(sent):
            out.write(update.text[len(sent):])
            out.flush()
            sent = update.text
        if update.finish_reason is not None:
            out.write("\n")
            return sent


def terminal_chat(engine: Engine, fields: dict[str, Any], stdin: Any = sys.stdin, out: Any = sys.stdout) -> None:
    """Read user lines; ``clear`` forgets the history, ``exit`` (or end of input) quits."""
    scheduler = Scheduler(engine, max_batch=1, max_queue=1)
    scheduler.start()
    messages: list[tuple[str, str]] = []
    out.write("chat with the model; `clear` forgets the history, `exit` quits\n")
    try:
        while True:
            out.write("\nUser: ")
            out.flush()
            line = stdin.readline()
            if not line or line.strip() == "exit":
                return
            if line.strip() == "clear":
                messages = []
                out.write("(history cleared)\n")
                continue
            messages.append(("user", line.rstrip("\n")))
            out.write("Assistant: ")
            messages.append(("assistant", reply(scheduler, messages, fields, out).strip()))
    finally:
        scheduler.stop()
