"""Serving throughput on the bundled model, loopback only: concurrency 1/4/16/64 over a fixed request mix,
against the same requests answered one after another in-process (the scheduler with one row, no HTTP).

Both sides stop a row where the server does (EOS, ``max_tokens``), so both count the same completion tokens
(``usage.completion_tokens``). Reports completion tokens/s, p50/p99 latency, the ratio to serial, and checks
that every request is answered once and equals its answer served alone.
Usage: ``python -m benchmarks.bench_serve [--requests 64]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import httpx

from llamafactory.serve.background import serve_in_background

BUNDLED = Path(__file__).resolve().parents[1] / "assets" / "diffugpt-tiny"

PROMPTS = ["The history of", "A", "In the morning the", "She said that", "The results show", "Once"]
SETTINGS = {"max_tokens": 32, "steps": 16, "temperature": 0.9}


def requests(count: int) -> list[dict]:
    return [{"prompt": PROMPTS[i % len(PROMPTS)], "seed": i, **SETTINGS} for i in range(count)]


async def run(url: str, bodies: list[dict], concurrency: int) -> tuple[list[str], list[float], float, int]:
    """``(texts, latencies, seconds, completion tokens)`` of every request, ``concurrency`` in flight."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    tokens = 0

    async def one(client: httpx.AsyncClient, body: dict) -> str:
        nonlocal tokens
        async with gate:
            began = time.perf_counter()
            response = await client.post(f"{url}/v1/completions", json=body)
            response.raise_for_status()
            latencies.append(time.perf_counter() - began)
            tokens += response.json()["usage"]["completion_tokens"]
            return response.json()["choices"][0]["text"]

    began = time.perf_counter()
    async with httpx.AsyncClient(timeout=300) as client:
        texts = await asyncio.gather(*(one(client, body) for body in bodies))
    return list(texts), latencies, time.perf_counter() - began, tokens


def serial_in_process(engine, bodies: list[dict]) -> tuple[list[str], float, int]:
    """``(texts, seconds, completion tokens)``: each request alone through a one-row scheduler, no HTTP."""
    import queue

    from llamafactory.serve.scheduler import Scheduler

    scheduler = Scheduler(engine, max_batch=1, max_queue=1)
    scheduler.start()
    texts, tokens = [], 0
    began = time.perf_counter()
    try:
        for body in bodies:
            fields = {key: value for key, value in body.items() if key not in ("prompt", "seed", "max_tokens")}
            job = engine.jobs([body["prompt"]], suffix=None, n=1, seed=body["seed"], stops=[],
                              max_tokens=body["max_tokens"], fields=fields)[0][0]
            updates: queue.Queue = queue.Queue()
            job.sink = updates.put
            scheduler.submit([job])
            while (update := updates.get()).finish_reason is None:
                pass
            texts.append(update.text)
            tokens += update.completion_tokens
    finally:
        scheduler.stop()
    return texts, time.perf_counter() - began, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=64, help="requests in the mix, answered at every concurrency")
    args = parser.parse_args()
    from llamafactory.serve.launch import load_engine

    engine = load_engine([f"model_name_or_path={BUNDLED}"])
    bodies = requests(args.requests)
    serial_texts, serial, serial_tokens = serial_in_process(engine, bodies)
    serial_rate = serial_tokens / serial
    print(f"serial in-process: {serial_rate:8.1f} tokens/s ({serial_tokens} tokens in {serial:.1f} s)")
    with serve_in_background(engine, max_batch=64, max_queue=1024, timeout=600) as running:
        for concurrency in (1, 4, 16, 64):
            texts, latencies, seconds, tokens = asyncio.run(run(running.url, bodies, concurrency))
            latencies.sort()
            p50, p99 = statistics.median(latencies), latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
            same = texts == serial_texts and len(latencies) == len(bodies)
            print(f"concurrency {concurrency:3d}: {tokens / seconds:8.1f} tokens/s, p50 {p50:.2f} s, "
                  f"p99 {p99:.2f} s, x{tokens / seconds / serial_rate:.1f} serial, answers equal alone: {same}")

if __name__ == "__main__":
    main()
