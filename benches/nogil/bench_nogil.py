"""Benchmarks for `#[gilkit::nogil]`, the adaptive policy and call-site statistics.

Run from the repository root with the test extension built in release mode:

    source .venv/bin/activate && (cd tests/testext && maturin develop --release)
    python benches/nogil/bench_nogil.py [--rounds 5] [--quick]

Three sections, each printed as a Markdown table (medians over rounds, ratios side by side):

1. wrapper: `nogil_plain_py` and `nogil_plain` (the attribute, with and without a `py`
   parameter) against `hand_detach` and `hand_detach_attach` (`py.detach` by hand, with and
   without a `py` parameter), the same spin from Python, interleaved call block by call block.
2. cost: the cost per call of a release through each form, measured in Rust (`release_cost_ns`),
   so Python's call overhead is left out: what call-site statistics add.
3. adaptive: never / always / adaptive release for work from 0 to 5 ms, alone and beside a busy
   pure-Python thread: the caller's mean and p99 latency, its progress and the busy thread's (each
   as a fraction of its rate alone), and their sum.
4. reacquire: what a release costs the caller, read from the call site's statistics: the mean
   wait to get the GIL back per released call, alone and beside a busy thread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from typing import Callable

import gilkit_testext as ext


def per_call_ns(fn: Callable[[int], int], arg: int, calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn(arg)
    return (time.perf_counter_ns() - start) / calls


def wrapper(rounds: int) -> None:
    print("## 1. `#[nogil]` wrapper vs hand-written `py.detach` (from Python)\n")
    print(
        "Like for like: a function with a `py: Python<'_>` parameter (`hand_detach` against"
        " `nogil_plain_py`, whose wrapper uses that parameter), and one without (`hand_detach_attach`,"
        " which gets the token from `Python::attach` before `py.detach`, against `nogil_plain`, whose"
        " wrapper does the same).\n"
    )
    print(
        "| work per call | with `py`: hand ns/call | `#[nogil]` ns/call | ratio (target <= 1.05)"
        " | without `py`: hand ns/call | `#[nogil]` ns/call | ratio (target <= 1.05) |"
    )
    print("|---|---|---|---|---|---|---|")
    subjects = [ext.hand_detach, ext.nogil_plain_py, ext.hand_detach_attach, ext.nogil_plain]
    for work_us, calls in [(0, 200_000), (10, 20_000), (100, 3_000), (1000, 300)]:
        samples: list[list[float]] = [[] for _ in subjects]
        for _ in range(rounds):
            # Interleave so that all four see the same machine state.
            for fn, times in zip(subjects, samples):
                times.append(per_call_ns(fn, work_us, calls))
        hand, attr, hand_attach, attr_attach = (statistics.median(t) for t in samples)
        print(
            f"| {work_us} µs | {hand:,.0f} | {attr:,.0f} | {attr / hand:.3f}x "
            f"| {hand_attach:,.0f} | {attr_attach:,.0f} | {attr_attach / hand_attach:.3f}x |"
        )
    print()


def cost(rounds: int) -> None:
    print("## 2. Cost per call of each release form (Rust loop, empty work)\n")
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, ns in ext.release_cost_ns(200_000, 3):
            samples.setdefault(name, []).append(ns)
    base = statistics.median(samples["py_detach"])
    print("| form | ns/call | vs `Python::detach` |")
    print("|---|---|---|")
    for name, values in samples.items():
        m = statistics.median(values)
        print(f"| `{name}` | {m:.1f} | {m / base:.2f}x |")
    print()


class Busy:
    """A pure-Python thread that counts as fast as it can while the GIL lets it."""

    def __init__(self) -> None:
        self.count = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop:
            n += 1
            if n & 0xFF == 0:
                self.count = n
        self.count = n

    def __enter__(self) -> "Busy":
        self._thread.start()
        time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join()


def solo_rate(window: float) -> float:
    """Counts per second of the busy thread when nobody else wants the GIL."""
    with Busy() as busy:
        c0, t0 = busy.count, time.perf_counter()
        time.sleep(window)
        return (busy.count - c0) / (time.perf_counter() - t0)


POLICIES: dict[str, Callable[[int], int]] = {
    "never": ext.spin_held,
    "always": ext.nogil_plain,
    "adaptive": ext.nogil_adaptive,
}


def run_policy(fn: Callable[[int], int], work_us: int, window: float, busy: Busy | None) -> tuple[float, float, float]:
    """Calls fn(work_us) for `window` seconds: (calls/s, p99 latency µs, busy thread counts/s)."""
    latencies = []
    c0 = busy.count if busy else 0
    start = time.perf_counter()
    end = start + window
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        fn(work_us)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    busy_rate = ((busy.count - c0) / elapsed) if busy else 0.0
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e6
    return len(latencies) / elapsed, p99, busy_rate


def adaptive(rounds: int, window: float, works: list[int]) -> None:
    print("## 3. Adaptive vs always vs never release\n")
    print(
        f"Switch interval {sys.getswitchinterval() * 1e3:.1f} ms; {window * 1e3:.0f} ms per measurement; "
        "adaptive threshold 250 µs (the default). For each work size and policy the caller calls in a "
        "loop, alone and then beside a busy pure-Python thread. Caller progress = its calls/s beside the "
        "busy thread / its calls/s alone (same policy); busy progress = the busy thread's rate / its rate "
        "alone; total = their sum (1.0 = one core's worth, as if the GIL were simply shared; 2.0 = both "
        f"at full speed). Medians of {rounds} rounds.\n"
    )
    print("| work | policy | mean latency alone µs | mean latency beside busy µs | p99 beside busy µs | caller progress | busy progress | total | adaptive / best fixed (total) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for work_us in works:
        rows: dict[str, list[tuple[float, ...]]] = {p: [] for p in POLICIES}
        for _ in range(rounds):
            solo = solo_rate(0.1)
            for name, fn in POLICIES.items():
                if name == "adaptive":
                    for _ in range(60):  # let the moving average settle on this work size
                        fn(work_us)
                alone_calls, _, _ = run_policy(fn, work_us, window, None)
                with Busy() as busy:
                    calls, p99, busy_rate = run_policy(fn, work_us, window, busy)
                caller = calls / alone_calls
                rows[name].append((1e6 / alone_calls, 1e6 / calls, p99, caller, busy_rate / solo, caller + busy_rate / solo))
        med = {name: [statistics.median(r[i] for r in rs) for i in range(6)] for name, rs in rows.items()}
        best = max(med["never"][5], med["always"][5])
        for name, (lat_alone, lat_busy, p99, caller, busy_p, total) in med.items():
            ratio = f"**{med['adaptive'][5] / best:.2f}**" if name == "adaptive" else ""
            print(f"| {work_us} µs | {name} | {lat_alone:,.1f} | {lat_busy:,.1f} | {p99:,.0f} | {caller:.2f} | {busy_p:.2f} | {total:.2f} | {ratio} |")
    print()


def reacquire(rounds: int, window: float) -> None:
    print("## 4. What a release costs the caller: the wait to get the GIL back (from `callsite_stats()`)\n")
    print("Mean re-acquire wait per released call of `nogil_plain`, read from the call site's own statistics.\n")
    print("| work | alone: wait per call µs | beside a busy thread: wait per call µs | beside busy: calls that waited > 1 ms |")
    print("|---|---|---|---|")
    key = "gilkit_testext::nogil::nogil_plain"
    for work_us in (10, 100, 1000):
        alone: list[float] = []
        busy_wait: list[float] = []
        for _ in range(rounds):
            for target, with_busy in ((alone, False), (busy_wait, True)):
                before = ext.callsite_stats()[key] if key in ext.callsite_stats() else {"released": 0, "reacquire_s": 0.0}
                if with_busy:
                    with Busy() as busy:
                        run_policy(ext.nogil_plain, work_us, window, busy)
                else:
                    run_policy(ext.nogil_plain, work_us, window, None)
                after = ext.callsite_stats()[key]
                calls = after["released"] - before["released"]
                target.append((after["reacquire_s"] - before["reacquire_s"]) / calls * 1e6)
        # The share of slow re-acquisitions, from per-call latencies beside a busy thread.
        with Busy() as busy:
            slow = 0
            n = 0
            end = time.perf_counter() + window
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                ext.nogil_plain(work_us)
                slow += (time.perf_counter() - t0) > work_us * 1e-6 + 1e-3
                n += 1
        print(f"| {work_us} µs | {statistics.median(alone):,.1f} | {statistics.median(busy_wait):,.1f} | {slow / n:.0%} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=float, default=0.2, help="seconds per adaptive point")
    parser.add_argument("--only", choices=["wrapper", "cost", "adaptive", "reacquire"])
    args = parser.parse_args()
    works = [0, 10, 50, 100, 250, 500, 1000, 2000, 5000]
    if args.only in (None, "wrapper"):
        wrapper(args.rounds)
    if args.only in (None, "cost"):
        cost(args.rounds)
    if args.only in (None, "adaptive"):
        adaptive(max(1, args.rounds // 2), args.window, works)
    if args.only in (None, "reacquire"):
        reacquire(max(1, args.rounds // 2), args.window)


if __name__ == "__main__":
    main()
