"""A short demonstration: Python threads running Rust work in parallel once the GIL is released.

Runs the same 10 ms Rust computation 40 times, from 1 thread and from 2 threads, first with the GIL
held (threads take turns) and then released with gilkit (threads overlap), and prints the wall times.
"""

from __future__ import annotations

import os
import threading
import time

import gilkit_testext as ext

CALLS = 40
WORK_US = 10_000


def timed(call, threads: int) -> float:
    def worker() -> None:
        for _ in range(CALLS // threads):
            call(WORK_US)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - start


def main() -> None:
    cores = len(os.sched_getaffinity(0))
    print(f"{CALLS} calls of {WORK_US // 1000} ms of Rust work, {cores} cores available\n")
    print(f"{'':28}{'1 thread':>10}{'2 threads':>11}{'speedup':>9}")
    for name, call in [("GIL held", ext.spin_held), ("GIL released (gilkit)", ext.spin_released)]:
        one, two = timed(call, 1), timed(call, 2)
        print(f"{name:28}{one:>9.3f}s{two:>10.3f}s{one / two:>8.2f}x")
    print("\nWith the GIL held, the second thread only waits; released, both cores work.")


if __name__ == "__main__":
    main()
