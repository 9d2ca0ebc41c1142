"""Serving throughput on the bundled model, loopback only: concurrency 1/4/16/64 over a fixed request mix,
against serial in-process generation of the same requests.

Reports tokens/s (generated positions per second), p50/p99 latency, and checks that every request is
answered once and equals its answer served alone. Usage: ``python -m benchmarks.bench_serve [--requests 64]``.
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


async def run(url: str, bodies: list[dict], concurrency: int) -> tuple[list[str], list[float], float]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(client: httpx.AsyncClient, body: dict) -> str:
        async with gate:
            began = time.perf_counter()
            response = await client.post(f"{url}/v1/completions", json=body)
            response.raise_for_status()
            latencies.append(time.perf_counter() - began)
            return response.json()["choices"][0]["text"]

    began = time.perf_counter()
    async with httpx.AsyncClient(timeout=300) as client:
        texts = await asyncio.gather(*(one(client, body) for body in bodies))
    return list(texts), latencies, time.perf_counter() - began


def serial_in_process(engine, bodies: list[dict]) -> float:
    """Seconds to generate every request one after another with ``ddm.generate`` (no server)."""
    import torch

    from llamafactory.ddm import generate

    began = time.perf_counter()
    for body in bodies:
        ids = torch.tensor([engine.prompt_ids(body["prompt"])])
        generate(engine.model, ids, max_new_tokens=body["max_tokens"], steps=body["steps"],
                 temperature=body["temperature"], generator=[engine.generator(body["seed"])])
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=64)
    args = parser.parse_args()
    from llamafactory.serve.launch import load_engine

    engine = load_engine([f"model_name_or_path={BUNDLED}"])
    bodies = requests(args.requests)
    positions = args.requests * SETTINGS["max_tokens"]
    serial = serial_in_process(engine, bodies)
    print(f"serial in-process: {positions / serial:8.1f} tokens/s ({serial:.1f} s)")
    with serve_in_background(engine, max_batch=64, max_queue=1024, timeout=600) as running:
        alone, _, _ = asyncio.run(run(running.url, bodies, 1))
        for concurrency in (1, 4, 16, 64):
            texts, latencies, seconds = asyncio.run(run(running.url, bodies, concurrency))
            latencies.sort()
            p50, p99 = statistics.median(latencies), latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
            same = texts == alone and len(latencies) == len(bodies)
            print(f"concurrency {concurrency:3d}: {positions / seconds:8.1f} tokens/s, p50 {p50:.2f} s, "
                  f"p99 {p99:.2f} s, x{serial / seconds:.1f} serial, answers equal alone: {same}")


if __name__ == "__main__":
    main()
