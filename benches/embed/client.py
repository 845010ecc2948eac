"""Benchmark: 1,000 texts to a loopback embeddings server that adds 20 ms to every request.

Every variant sends the same 1,000 one-text requests with the same concurrency (50 in flight), so
the latency floor is ceil(1000 / 50) x 20 ms = 400 ms; the figure of merit is how close each gets to
it. Variants:

* gilkit ``embed_batch_parallel`` (1,000 one-text batches, ``max_concurrency=50``)
* gilkit ``embed`` from 50 Python threads (ThreadPoolExecutor)
* gilkit ``aembed`` from asyncio (a semaphore of 50)
* the official ``openai`` client from 50 threads (ThreadPoolExecutor)
* ``AsyncOpenAI`` with asyncio (a semaphore of 50)
* gilkit ``embed`` sequentially (one at a time; on 100 texts, scaled to 1,000)

The server is gilkit_embed's FaultServer (Rust, its own 2 threads) on 127.0.0.1.

    python benches/embed/client.py [--rounds 5] [--texts 1000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchlib import header  # noqa: E402

import openai  # noqa: E402

from gilkit_embed import EmbeddingClient, EmbeddingConfig  # noqa: E402
from gilkit_embed.testing import FaultServer  # noqa: E402

LATENCY = 0.020


def _timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--out", default=None, help="write the markdown here (default: stdout)")
    args = ap.parse_args()
    n, c = args.texts, args.concurrency
    texts = [f"benchmark text number {i}, a sentence of ordinary length" for i in range(n)]
    floor = math.ceil(n / c) * LATENCY

    server = FaultServer(dim=384, latency=LATENCY, worker_threads=2)
    url = server.base_url
    ours = EmbeddingClient(EmbeddingConfig.openai(api_key="k", base_url=url, max_concurrency=c))
    theirs = openai.OpenAI(api_key="k", base_url=url, max_retries=2)

    def gilkit_batch_parallel() -> None:
        out = ours.embed_batch_parallel([[t] for t in texts], max_concurrency=c)
        assert out["stats"]["failed_batches"] == 0

    def gilkit_threads() -> None:
        with ThreadPoolExecutor(c) as pool:
            assert len(list(pool.map(ours.embed, texts))) == n

    def gilkit_asyncio() -> None:
        async def run() -> None:
            sem = asyncio.Semaphore(c)

            async def one(t: str) -> list[float]:
                async with sem:
                    return await ours.aembed(t)

            assert len(await asyncio.gather(*(one(t) for t in texts))) == n

        asyncio.run(run())

    def openai_threads() -> None:
        def one(t: str) -> list[float]:
            return theirs.embeddings.create(model="m", input=[t]).data[0].embedding

        with ThreadPoolExecutor(c) as pool:
            assert len(list(pool.map(one, texts))) == n

    def openai_asyncio() -> None:
        async def run() -> None:
            client = openai.AsyncOpenAI(api_key="k", base_url=url, max_retries=2)
            sem = asyncio.Semaphore(c)

            async def one(t: str) -> list[float]:
                async with sem:
                    r = await client.embeddings.create(model="m", input=[t])
                    return r.data[0].embedding

            assert len(await asyncio.gather(*(one(t) for t in texts))) == n
            await client.close()

        asyncio.run(run())

    seq_n = min(n, 100)

    def gilkit_sequential() -> None:
        for t in texts[:seq_n]:
            ours.embed(t)

    variants: list[tuple[str, Callable[[], None], float]] = [
        ("gilkit `embed_batch_parallel`", gilkit_batch_parallel, 1.0),
        (f"gilkit `embed`, {c} threads", gilkit_threads, 1.0),
        (f"gilkit `aembed`, asyncio (semaphore {c})", gilkit_asyncio, 1.0),
        (f"openai client, {c} threads", openai_threads, 1.0),
        (f"AsyncOpenAI, asyncio (semaphore {c})", openai_asyncio, 1.0),
        (f"gilkit `embed`, sequential ({seq_n} texts, x{n // seq_n})", gilkit_sequential, n / seq_n),
    ]
    # Warm up every variant once (connections, imports, the runtime), then interleave rounds so
    # that machine noise hits all variants alike.
    for _, fn, _ in variants:
        fn()
    times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for _ in range(args.rounds):
        for name, fn, scale in variants:
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * scale)
    # The same requests with no added latency: what they cost in CPU, client and server together
    # (both on this machine's cores), which is what separates the runs above from the floor.
    # One request's latency as actually served (the server's timer, the loopback hop): the floor as
    # issue 7 defines it is this times the number of waves.
    one_request = statistics.median(_timed(lambda: ours.embed(texts[0])) for _ in range(20))
    measured_floor = math.ceil(n / c) * one_request
    server.set_latency(0.0)
    cpu_cost = statistics.median(_timed(gilkit_batch_parallel) for _ in range(args.rounds))
    server.close()

    baseline = statistics.median(times[f"openai client, {c} threads"])
    lines = [
        header(
            "gilkit_embed client: 1,000 texts, 20 ms server latency",
            "python benches/embed/client.py " + " ".join(sys.argv[1:]),
        ),
        "",
        f"{n} one-text requests, {c} in flight, to gilkit_embed's FaultServer on 127.0.0.1 adding "
        f"{LATENCY * 1e3:.0f} ms per request. Latency floor: ceil({n}/{c}) x {LATENCY * 1e3:.0f} ms = "
        f"{floor * 1e3:.0f} ms. One request as served takes {one_request * 1e3:.1f} ms (median of 20), so "
        f"the measured floor, one request's latency x {math.ceil(n / c)} waves, is "
        f"{measured_floor * 1e3:.0f} ms. Median of {args.rounds} interleaved rounds after one warm-up round.",
        "",
        "| variant | median | min | x nominal floor | x measured floor | vs openai + threads |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, _, _ in variants:
        med = statistics.median(times[name])
        lines.append(
            f"| {name} | {med * 1e3:.0f} ms | {min(times[name]) * 1e3:.0f} ms | {med / floor:.2f}x | "
            f"{med / measured_floor:.2f}x | {baseline / med:.2f}x faster |"
        )
    lines += [
        "",
        f"The same {n} requests with 0 ms added latency take {cpu_cost * 1e3:.0f} ms "
        "(gilkit `embed_batch_parallel`, median): the CPU time of the requests, client and server "
        "together on the same cores. With 20 ms latency the requests go in waves of "
        f"{c}, and each wave's CPU work adds to its 20 ms, so the floor plus that cost is what the best "
        "achievable here looks like.",
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
