"""Benchmarks of gilkit's batch executor, each against its baselines measured side by side in the
same run (medians over rounds). Prints a Markdown report.

1. Per-item overhead, 100,000 trivial items: gilkit CPU and async modes (called from Python, GIL
   released) vs ThreadPoolExecutor.map, asyncio.gather, and in Rust rayon's par_iter (cargo bench).
2. 2,000 items of 1 ms CPU work: 2 workers vs 1 (sequential), and vs ThreadPoolExecutor calling a
   GIL-releasing function.
3. 500 requests to a loopback server answering after 20 ms, 64 in flight: gilkit async mode vs the
   floor (one request's latency x waves) and vs aiohttp with the same concurrency.
4. Ctrl-C latency of a running batch (CPU and async mode), SIGINT to KeyboardInterrupt.
5. The Executor: submit+result of 10,000 tiny native calls vs ThreadPoolExecutor with a Python
   function.

Run from the repository root with the test extension built (`bash scripts/setup.sh`):
    python benches/batch/bench.py [--rounds N] [--skip-cargo]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import gilkit_testext as ext

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from sigint import interrupt_after_ready  # noqa: E402


def median_time(fn, rounds: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def trivial(x: int) -> int:
    return x * 2


async def trivial_coroutine(x: int) -> int:
    return x * 2


def overhead(rounds: int, skip_cargo: bool) -> list[tuple[str, float]]:
    n = 100_000
    rows = [
        ("gilkit CPU mode (`run_cpu_from_python`, 2 workers)", median_time(lambda: ext.batch_trivial(n, mode="cpu", workers=2), rounds) / n),
        ("gilkit async mode (`block_on_batch_from_python`, 64 in flight)", median_time(lambda: ext.batch_trivial(n, mode="async", max_concurrency=64), rounds) / n),
    ]
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        rows.append(("`ThreadPoolExecutor(2).map`", median_time(lambda: list(pool.map(trivial, range(n))), rounds) / n))

    async def gather() -> list[int]:
        return await asyncio.gather(*(trivial_coroutine(i) for i in range(n)))

    rows.append(("`asyncio.gather`", median_time(lambda: asyncio.run(gather()), rounds) / n))
    if not skip_cargo:
        out = subprocess.run(
            ["cargo", "bench", "-q", "-p", "gilkit", "--bench", "batch", "--", str(max(rounds, 7))],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout
        names = {
            "rust_sequential_loop": "Rust: plain loop (reference)",
            "rayon_par_iter": "Rust: rayon `par_iter().map().collect()`",
            "gilkit_run_cpu": "Rust: `gilkit::batch::run_cpu`, all CPUs",
            "gilkit_run_cpu_1_worker": "Rust: `gilkit::batch::run_cpu`, 1 worker",
            "gilkit_run_async": "Rust: `gilkit::batch::run_async`, 64 in flight",
        }
        for line in out.splitlines():
            key, _, value = line.partition(" ")
            if key in names:
                rows.append((names[key], float(value) * 1e-9))
    return rows


def cpu_scaling(rounds: int) -> dict[str, float]:
    n, micros = 2_000, 1_000
    one = median_time(lambda: ext.batch_spin(n, micros, workers=1), rounds)
    two = median_time(lambda: ext.batch_spin(n, micros, workers=2), rounds)
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        tpe = median_time(lambda: list(pool.map(ext.spin_released, [micros] * n)), rounds)
    return {"sequential": one, "gilkit": two, "tpe": tpe}


def start_server(delay_ms: int) -> tuple[subprocess.Popen, int]:
    code = (
        "import sys, time, gilkit_testext as ext\n"
        f"print(ext.start_delay_server({delay_ms}), flush=True)\n"
        "time.sleep(3600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


async def aiohttp_batch(port: int, n: int, concurrency: int) -> None:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with session.get(f"http://127.0.0.1:{port}/") as response:
                assert response.status == 200
                await response.read()

        await asyncio.gather(*(one() for _ in range(n)))


def http(rounds: int) -> dict[str, float]:
    n, concurrency, delay_ms = 500, 64, 20
    proc, port = start_server(delay_ms)
    try:
        single = median_time(lambda: ext.batch_http_get(port, 1, max_concurrency=1), max(rounds, 9))
        waves = math.ceil(n / concurrency)
        gilkit = median_time(lambda: ext.batch_http_get(port, n, max_concurrency=concurrency), rounds)
        aio = median_time(lambda: asyncio.run(aiohttp_batch(port, n, concurrency)), rounds)
    finally:
        proc.kill()
        proc.wait()
    return {"single": single, "waves": waves, "floor": single * waves, "gilkit": gilkit, "aiohttp": aio}


CTRL_C_CHILD = """
import gilkit_testext as ext
print("READY", flush=True)
try:
    ext.{call}
except KeyboardInterrupt:
    print("CAUGHT KeyboardInterrupt", flush=True)
"""

CTRL_C = {
    "CPU mode, 1,000 items of 500 ms, 2 workers": "batch_square(list(range(1_000)), sleep_ms=500, workers=2)",
    "CPU mode, 100,000 items of 5 ms, 2 workers (includes building 100,000 `partial_results`)": "batch_square(list(range(100_000)), sleep_ms=5, workers=2)",
    "async mode, 200 futures of 60 s, 10 in flight": "batch_sleep_async([60_000] * 200, max_concurrency=10)",
}


def ctrl_c(rounds: int) -> dict[str, float]:
    return {
        name: statistics.median(
            interrupt_after_ready(CTRL_C_CHILD.format(call=call), settle=0.3)[0] for _ in range(rounds)
        )
        for name, call in CTRL_C.items()
    }


def executor(rounds: int) -> dict[str, float]:
    n = 10_000

    def run(ex, fn) -> None:
        futures = [ex.submit(fn, i) for i in range(n)]
        for f in futures:
            f.result()

    with ext.Executor(max_workers=2) as ex:
        ours = median_time(lambda: run(ex, ext.native_double), rounds) / n
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        theirs = median_time(lambda: run(pool, trivial), rounds) / n
    return {"gilkit": ours, "tpe": theirs}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-cargo", action="store_true")
    args = parser.parse_args()
    r = args.rounds

    print(f"- machine: {os.cpu_count()} CPUs (`nproc`), {cpu_model()}, Python {platform.python_version()}, load average at start {os.getloadavg()[0]:.1f}")
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"- command: `python benches/batch/bench.py --rounds {r}` (release build of the test extension); medians of {r} rounds\n")

    print("## 1. Per-item overhead, 100,000 trivial items (`x * 2`)\n")
    rows = overhead(r, args.skip_cargo)
    tpe = next(v for k, v in rows if "ThreadPool" in k)
    print("| contender | per item | vs ThreadPoolExecutor.map |\n|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1e9:,.0f} ns | {tpe / seconds:,.1f}x faster |")

    print("\n## 2. 2,000 items of 1 ms CPU work\n")
    c = cpu_scaling(r)
    print("| contender | wall time | speedup vs sequential |\n|---|---:|---:|")
    print(f"| sequential (gilkit, 1 worker) | {c['sequential'] * 1e3:.0f} ms | 1.00x |")
    print(f"| gilkit `run_cpu_from_python`, 2 workers | {c['gilkit'] * 1e3:.0f} ms | {c['sequential'] / c['gilkit']:.2f}x |")
    print(f"| ThreadPoolExecutor(2) over a GIL-releasing call | {c['tpe'] * 1e3:.0f} ms | {c['sequential'] / c['tpe']:.2f}x |")

    print("\n## 3. 500 requests, loopback server answering after 20 ms, 64 in flight\n")
    h = http(r)
    print("| contender | wall time | vs floor |\n|---|---:|---:|")
    print(f"| floor: one request ({h['single'] * 1e3:.1f} ms) x {h['waves']} waves | {h['floor'] * 1e3:.0f} ms | 1.00x |")
    print(f"| gilkit `block_on_batch_from_python` (a connection per request) | {h['gilkit'] * 1e3:.0f} ms | {h['gilkit'] / h['floor']:.2f}x |")
    print(f"| aiohttp, `TCPConnector(limit=64)` + `asyncio.gather` (keep-alive) | {h['aiohttp'] * 1e3:.0f} ms | {h['aiohttp'] / h['floor']:.2f}x |")

    print("\n## 4. Ctrl-C latency (SIGINT to KeyboardInterrupt in the child, medians)\n")
    print("| batch | latency |\n|---|---:|")
    for name, seconds in ctrl_c(r).items():
        print(f"| {name} | {seconds * 1e3:.0f} ms |")

    print("\n## 5. Executor: `submit` + `result()` of 10,000 tiny calls, 2 workers\n")
    e = executor(r)
    print("| contender | per call |\n|---|---:|")
    print(f"| `gilkit Executor` + `NativeFn` | {e['gilkit'] * 1e6:.1f} µs |")
    print(f"| `ThreadPoolExecutor` + Python function | {e['tpe'] * 1e6:.1f} µs |")


if __name__ == "__main__":
    main()
