"""gilkit_marc's reading throughput, two builds side by side in one run: records/s of each build
for the reading workloads read-ahead touches, rounds alternating between the builds, medians.

Each build is a Python interpreter with its own gilkit_marc installed (for example the venv of a
`git worktree` of main, and this checkout's). Usage:

    python benches/marc/compare_builds.py --before PY --after PY [--rounds 7]

COMPARE_ONLY=text runs only the workloads whose name contains `text`. The `MARCReader` workloads
read from `open(path, "rb")` (which keeps pymarc's file position: one `lseek` a record, since
issue 18) and, in the `MARCReader(path)` rows, from the path (no position kept).

Each round runs every workload once per build, in a fresh process per build (`--child` mode),
the two builds' order alternating from round to round; within a process each workload runs
after one warm-up, best of 3 (each after a `gc.collect()`). Prints a markdown table: medians and after / before.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "examples" / "marc-reader" / "tests" / "data" / "mrrc"
FILES = ["10k_records.mrc", "realistic.mrc"]


def child() -> None:
    import gilkit_marc

    def fields(reader: object) -> int:
        n = 0
        for record in reader:  # type: ignore[attr-defined]
            for field in record.fields:
                if field.control_field:
                    field.data
                else:
                    for sub in field.subfields:
                        sub.code, sub.value
            n += 1
        return n

    def count(reader: object) -> int:
        return sum(1 for _ in reader)  # type: ignore[attr-defined]

    def two_threads(path: Path) -> int:
        counts = [0, 0]

        def read(i: int) -> None:
            counts[i] = fields(gilkit_marc.MARCReader(open(path, "rb")))

        threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts)

    workloads: dict[str, Callable[[Path], int]] = {
        "MARCReader, fields": lambda p: fields(gilkit_marc.MARCReader(open(p, "rb"))),
        "MARCReader, fields, readahead=False": lambda p: fields(gilkit_marc.MARCReader(open(p, "rb"), readahead=False)),
        "MARCReader, records only": lambda p: count(gilkit_marc.MARCReader(open(p, "rb"))),
        "MARCReader, records only, lazy": lambda p: count(gilkit_marc.MARCReader(open(p, "rb"), lazy_fields=True)),
        # A path keeps no file position: the same reading without the lseek per record that
        # `open(path, "rb")` pays to keep pymarc's `fh.tell()` (issue 18, item 2).
        "MARCReader(path), fields": lambda p: fields(gilkit_marc.MARCReader(str(p))),
        "MARCReader(path), records only, lazy": lambda p: count(gilkit_marc.MARCReader(str(p), lazy_fields=True)),
        "read_all": lambda p: len(gilkit_marc.read_all(p)),
        "read_all, readahead=False": lambda p: len(gilkit_marc.read_all(p, readahead=False)),
        "read_all, threads=2": lambda p: len(gilkit_marc.read_all(p, threads=2)),
        "2 threads, own copy each, fields": two_threads,
    }
    out: dict[str, float] = {}
    only = os.environ.get("COMPARE_ONLY")
    for name, fn in workloads.items():
        if only and only not in name:
            continue
        for file in FILES:
            path = DATA / file
            fn(path)
            best, best_cpu = float("inf"), float("inf")
            for _ in range(3):
                gc.collect()
                start, start_cpu = time.perf_counter(), time.process_time()
                records = fn(path)
                best = min(best, time.perf_counter() - start)
                best_cpu = min(best_cpu, time.process_time() - start_cpu)
            out[f"{name} | {file}"] = records / best
            out[f"{name} | {file} | cpu"] = records / best_cpu
    print(json.dumps(out))


def run(python: str) -> dict[str, float]:
    result = subprocess.run([python, __file__, "--child"], check=True, capture_output=True, text=True)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--child", action="store_true")
    args, _ = parser.parse_known_args()
    builds = {"before": args.before, "after": args.after}
    results: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for round_ in range(args.rounds):
        order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
        for build in order:
            results[build].append(run(builds[build]))
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    print(f"medians of {args.rounds} rounds (records/s; best of 3 within a round)\n")
    print("Wall: records/s. CPU: records per CPU second of the process (all its threads), less")
    print("sensitive to other load than wall time.\n")
    print("| workload | file | before rec/s | after rec/s | after / before | CPU after / before |")
    print("|---|---|---:|---:|---:|---:|")

    def median(build: str, key: str) -> float:
        return statistics.median(r[key] for r in results[build])

    for key in results["before"][0]:
        if key.endswith(" | cpu"):
            continue
        before, after = median("before", key), median("after", key)
        cpu = median("after", key + " | cpu") / median("before", key + " | cpu")
        workload, file = key.split(" | ")
        print(f"| {workload} | {file} | {before:,.0f} | {after:,.0f} | {after / before:.2f}x | {cpu:.2f}x |")


if __name__ == "__main__":
    if "--child" in sys.argv:
        child()
    else:
        main()
