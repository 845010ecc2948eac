"""gilkit::asyncio against pyo3-async-runtimes, asyncio.to_thread and pure asyncio, side by side.

Needs the test extension built with the baseline compiled in:

    (cd tests/testext && maturin develop --release --features bench-pyo3-async-runtimes)
    python benches/asyncio/bench.py [--rounds 7] [--out benches/results/asyncio.md]

Scenarios (default event loop; every contender measured in every round, in turn, medians reported):
1. one awaitable at a time, ready at once (the bridge's own cost per awaitable);
2. one awaitable at a time, a 1 ms sleep (tokio's timer for the Rust contenders, asyncio's for the
   others: their timers differ, so read this row for what a caller waits, not for bridge cost);
3. 10,000 awaitables at once (`asyncio.gather`), ready, and sleeping 1 ms;
4. memory per pending awaitable: RSS growth over 10,000 awaitables that never complete, each
   contender in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gilkit_testext as ext  # noqa: E402
from benchlib import header  # noqa: E402

if not hasattr(ext, "par_ready"):
    sys.exit(
        "gilkit_testext lacks the pyo3-async-runtimes baseline: rebuild it with "
        "`cd tests/testext && maturin develop --release --features bench-pyo3-async-runtimes`"
    )


def _identity(value):
    return value


def _sleep_then(ms, value):
    time.sleep(ms / 1000)
    return value


async def _pure_ready(value):
    return value


async def _pure_sleep(ms, value):
    await asyncio.sleep(ms / 1000)
    return value


# name -> (ready(value), sleep(ms, value)); each returns an awaitable.
CONTENDERS = {
    "gilkit::asyncio": (ext.asyncio_ready, ext.asyncio_sleep),
    "pyo3-async-runtimes": (ext.par_ready, ext.par_sleep),
    "asyncio.to_thread": (
        lambda v: asyncio.to_thread(_identity, v),
        lambda ms, v: asyncio.to_thread(_sleep_then, ms, v),
    ),
    "pure asyncio": (_pure_ready, _pure_sleep),
}

# How to make one awaitable that never completes, per contender (for the memory scenario).
PENDING = {
    "gilkit::asyncio": "ext.asyncio_forever()",
    "pyo3-async-runtimes": "ext.par_forever()",
    "asyncio.to_thread": "asyncio.ensure_future(asyncio.to_thread(gate.wait))",
    "pure asyncio": "asyncio.ensure_future(asyncio.sleep(3600))",
}


async def sequential(make, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        assert await make(i) == i
    return (time.perf_counter() - start) / count


async def concurrent(make, count: int) -> float:
    start = time.perf_counter()
    results = await asyncio.gather(*(make(i) for i in range(count)))
    elapsed = time.perf_counter() - start
    assert results == list(range(count))
    return elapsed


def scenarios():
    return {
        "ready, one at a time (per awaitable)": (lambda c: sequential(c[0], 2_000), "us"),
        "1 ms sleep, one at a time (per awaitable)": (lambda c: sequential(lambda i: c[1](1, i), 200), "us"),
        "10,000 at once, ready (total)": (lambda c: concurrent(c[0], 10_000), "ms"),
        "10,000 at once, 1 ms sleep (total)": (lambda c: concurrent(lambda i: c[1](1, i), 10_000), "ms"),
    }


def measure(rounds: int) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, list[float]]] = {s: {c: [] for c in CONTENDERS} for s in scenarios()}
    loop = asyncio.new_event_loop()
    try:
        for name, c in CONTENDERS.items():  # warm-up: start runtimes and thread pools
            loop.run_until_complete(concurrent(c[0], 100))
        for _ in range(rounds):
            for scenario, (run, _unit) in scenarios().items():
                for name, c in CONTENDERS.items():
                    gc.collect()
                    found[scenario][name].append(loop.run_until_complete(run(c)))
    finally:
        loop.close()
    return {s: {c: statistics.median(v) for c, v in per.items()} for s, per in found.items()}


MEMORY_CHILD = """
import asyncio, gc, threading, gilkit_testext as ext
N = 10_000
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * {page}
gate = threading.Event()
async def main():
    warm = [{pending} for _ in range(100)]  # runtimes, pools, caches
    for w in warm:
        w.cancel()
    await asyncio.sleep(0.05)
    gc.collect()
    before = rss()
    pending = [{pending} for _ in range(N)]
    await asyncio.sleep(0.05)
    gc.collect()
    grown = rss() - before
    gate.set()
    for p in pending:
        p.cancel()
    await asyncio.sleep(0.05)
    print(grown / N)
asyncio.run(main())
"""


def memory_per_pending(name: str) -> float:
    code = MEMORY_CHILD.format(page=os.sysconf("SC_PAGE_SIZE"), pending=PENDING[name])
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--memory-rounds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    timings = measure(args.rounds)
    memory = {c: statistics.median(memory_per_pending(c) for _ in range(args.memory_rounds)) for c in CONTENDERS}

    names = list(CONTENDERS)
    lines = [
        header(
            "gilkit::asyncio (issue 14)",
            f"python benches/asyncio/bench.py --rounds {args.rounds} --memory-rounds {args.memory_rounds}",
        ),
        f"\nMedians over {args.rounds} rounds; in each round every contender runs each scenario in turn "
        "on the same default asyncio loop, so the ratios are side by side. The machine's 2 cores were "
        "shared with other builds and benchmarks while this ran: absolute figures are noisy, the "
        "ratios less so.\n",
        "\n## Time\n",
        "| scenario | " + " | ".join(names) + " | gilkit / pyo3-async-runtimes |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for scenario, (_run, unit) in scenarios().items():
        scale = 1e6 if unit == "us" else 1e3
        cells = [f"{timings[scenario][n] * scale:,.1f} {unit}" for n in names]
        ratio = timings[scenario]["gilkit::asyncio"] / timings[scenario]["pyo3-async-runtimes"]
        lines.append(f"| {scenario} | " + " | ".join(cells) + f" | **{ratio:.2f}x** |")
    lines += [
        "\n## Memory per pending awaitable\n",
        f"RSS growth over 10,000 awaitables that never complete, divided by 10,000; median of "
        f"{args.memory_rounds} fresh interpreters per contender.\n",
        "| " + " | ".join(names) + " | gilkit / pyo3-async-runtimes |",
        "|" + "---|" * (len(names) + 1),
        "| " + " | ".join(f"{memory[n]:,.0f} B" for n in names)
        + f" | **{memory['gilkit::asyncio'] / memory['pyo3-async-runtimes']:.2f}x** |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text + NOTES)


NOTES = """
## Reading the figures

- **Ready, one at a time** is the bridge's own cost: creating the asyncio future, spawning the task,
  delivering the result. gilkit delivers through a per-loop queue drained on the loop thread (no
  runtime thread takes the GIL); pyo3-async-runtimes takes the GIL on the runtime thread and calls
  `call_soon_threadsafe` per result.
- **10,000 at once** is where the delivery paths differ most: gilkit's completions share wake-ups
  (one socket byte per drain), pyo3-async-runtimes' runtime threads queue for the GIL once per
  result while the loop thread holds it.
- The 1 ms rows compare timers as much as bridges (tokio's timer wheel has 1 ms granularity;
  asyncio's loop sleeps on `epoll` with its own rounding); `asyncio.to_thread` runs at most
  `min(32, cpu + 4)` threads at once, which bounds its 10,000-at-once rows.
- Memory is RSS growth, so it includes each contender's Python objects (the asyncio future, the
  done callback) and its Rust task; the thread pool's queued work items for `to_thread`.
"""


if __name__ == "__main__":
    main()
