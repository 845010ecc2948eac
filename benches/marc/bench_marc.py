"""Reading and writing MARC: gilkit_marc vs pymarc 5 vs mrrc, side by side in one run.

Reading: records/s for reading a file and fully iterating fields (tag, data or every subfield's
code and value). Writing: records/s for MARCWriter.write of already-read records to a BytesIO.
Threads: 2 threads, each reading its own copy of the file, vs one thread reading both copies.
Also: reading records only (counting them, as mrrc's threading benchmarks do) on one and two
threads, gilkit_marc eager and lazy with read-ahead on and off; gilkit_marc with read-ahead
parsing on and off; the ceiling the benchmark's own Python loop puts on 2-thread scaling;
writing with 2 threads; and a "few fields" workload that looks up 245 and 650 in each record.
Medians over --rounds rounds. Usage:

    python benches/marc/bench_marc.py [--rounds 5] [--big]

--big also runs a ~100 MB file made by repeating the two inputs (written to benches/out/).
"""

from __future__ import annotations

import argparse
import functools
import gc
import io
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mrrc
import pymarc

import gilkit_marc

DATA = Path(__file__).resolve().parents[2] / "examples" / "marc-reader" / "tests" / "data" / "mrrc"


def iterate_fields(reader: object) -> int:
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


def iterate_mrrc(reader: object) -> int:
    n = 0
    for record in reader:  # type: ignore[attr-defined]
        for field in record.fields():
            if field.is_control_field():
                field.data
            else:
                for sub in field.subfields():
                    sub.code, sub.value
        n += 1
    return n


def count_records(reader: object) -> int:
    """The "records only" workload, as mrrc's own threading benchmarks measure: count, touch no field."""
    n = 0
    for _ in reader:  # type: ignore[attr-defined]
        n += 1
    return n


def lookup_few(reader: object) -> int:
    """The "few fields" workload: title and subjects of each record (same API in all three)."""
    n = 0
    for record in reader:  # type: ignore[attr-defined]
        for field in record.get_fields("245"):
            field.get("a")
        for field in record.get_fields("650"):
            field.get("a")
        n += 1
    return n


READERS = {
    "pymarc": lambda p: iterate_fields(pymarc.MARCReader(open(p, "rb"))),
    "mrrc": lambda p: iterate_mrrc(mrrc.MARCReader(open(p, "rb"))),
    "gilkit_marc": lambda p: iterate_fields(gilkit_marc.MARCReader(open(p, "rb"))),
}


LOOKUPS = {
    "pymarc": lambda p: lookup_few(pymarc.MARCReader(open(p, "rb"))),
    "mrrc": lambda p: lookup_few(mrrc.MARCReader(open(p, "rb"))),
    "gilkit_marc": lambda p: lookup_few(gilkit_marc.MARCReader(open(p, "rb"))),
    "gilkit_marc lazy": lambda p: lookup_few(gilkit_marc.MARCReader(open(p, "rb"), lazy_fields=True)),
}

COUNTS = {
    "pymarc": lambda p: count_records(pymarc.MARCReader(open(p, "rb"))),
    "mrrc": lambda p: count_records(mrrc.MARCReader(open(p, "rb"))),
    "gilkit_marc": lambda p: count_records(gilkit_marc.MARCReader(open(p, "rb"))),
    "gilkit_marc readahead=False": lambda p: count_records(gilkit_marc.MARCReader(open(p, "rb"), readahead=False)),
    "gilkit_marc lazy": lambda p: count_records(gilkit_marc.MARCReader(open(p, "rb"), lazy_fields=True)),
    "gilkit_marc lazy readahead=False": lambda p: count_records(
        gilkit_marc.MARCReader(open(p, "rb"), lazy_fields=True, readahead=False)
    ),
}

# Every record of a file in a list, per library (records kept: for writing, and "into a list").
LOAD = {
    "pymarc": lambda p: list(pymarc.MARCReader(open(p, "rb"))),
    "mrrc": lambda p: list(mrrc.MARCReader(open(p, "rb"))),
    "gilkit_marc": lambda p: list(gilkit_marc.MARCReader(open(p, "rb"))),
}

# gilkit_marc with read-ahead parsing on (the default) and off.
READAHEAD = {
    "on": lambda p: iterate_fields(gilkit_marc.MARCReader(open(p, "rb"), readahead=True)),
    "off": lambda p: iterate_fields(gilkit_marc.MARCReader(open(p, "rb"), readahead=False)),
}


def interleaved(
    fns: Mapping[str, Callable[[], object]], rounds: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
    """Median seconds of each function, running them in turn each round: on a shared, noisy
    machine a change of load then hits every library alike instead of whichever ran last."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = clock()
            fn()
            times[name].append(clock() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def serially(fn: Callable[[Path], object], paths: list[Path]) -> None:
    for path in paths:
        fn(path)


def in_threads(fn: Callable[[Path], object], paths: list[Path]) -> None:
    threads = [threading.Thread(target=fn, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def one_copy(fns: Mapping[str, Callable[[Path], object]], path: Path) -> dict[str, Callable[[], object]]:
    """Each function reading `path` once."""
    return {name: functools.partial(fn, path) for name, fn in fns.items()}


def two_copies(fns: Mapping[str, Callable[[Path], object]], path: Path) -> dict[str, Callable[[], object]]:
    """For each function, "<name> serial" (one thread reading two copies of `path` in turn) and
    "<name> threads" (two threads reading one copy each)."""
    runs: dict[str, Callable[[], object]] = {}
    for name, fn in fns.items():
        runs[f"{name} serial"] = functools.partial(serially, fn, [path, path])
        runs[f"{name} threads"] = functools.partial(in_threads, fn, [path, path])
    return runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--big", action="store_true")
    args = parser.parse_args()
    files = [DATA / "10k_records.mrc", DATA / "realistic.mrc"]
    if args.big:
        out = Path(__file__).resolve().parents[1] / "out"
        out.mkdir(exist_ok=True)
        big = out / "big.mrc"
        if not big.exists():
            chunk = b"".join(p.read_bytes() for p in files)
            big.write_bytes(chunk * (100_000_000 // len(chunk) + 1))
        files.append(big)
    print(f"python {sys.version.split()[0]}, nproc {os.cpu_count()}, rounds {args.rounds} (medians)\n")

    print("## Reading (records/s, fully iterating fields)\n")
    print("| file | records | pymarc | mrrc | gilkit_marc | vs pymarc | vs mrrc |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path in files:
        n = READERS["gilkit_marc"](path)
        rounds = min(args.rounds, 3) if path.stat().st_size > 10_000_000 else args.rounds
        t = interleaved(one_copy(READERS, path), rounds)
        rate = {k: n / v for k, v in t.items()}
        print(
            f"| {path.name} | {n} | {rate['pymarc']:,.0f} | {rate['mrrc']:,.0f} | {rate['gilkit_marc']:,.0f} "
            f"| {t['pymarc'] / t['gilkit_marc']:.1f}x | {t['mrrc'] / t['gilkit_marc']:.2f}x |"
        )

    print("\n## Reading, CPU time of this process (less sensitive to other load than wall time)\n")
    print("gilkit_marc's includes its read-ahead worker thread (see the read-ahead section).\n")
    print("| file | pymarc ms | mrrc ms | gilkit_marc ms | vs pymarc | vs mrrc |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in files[:2]:
        fns = one_copy(READERS, path)
        t = interleaved(fns, args.rounds, clock=time.process_time)
        print(
            f"| {path.name} | {t['pymarc'] * 1e3:.0f} | {t['mrrc'] * 1e3:.0f} | {t['gilkit_marc'] * 1e3:.1f} "
            f"| {t['pymarc'] / t['gilkit_marc']:.1f}x | {t['mrrc'] / t['gilkit_marc']:.2f}x |"
        )

    print("\n## Where gilkit_marc's time goes (one thread, readahead off: all parsing on this thread)\n")
    print("| file | total ms | GIL released ms (read + frame + parse) | released share | max 2-thread speed-up |")
    print("|---|---:|---:|---:|---:|")
    for path in files[:2]:
        shares = []
        for _ in range(args.rounds):
            reader = gilkit_marc.MARCReader(path, readahead=False)
            start = time.perf_counter()
            iterate_fields(reader)
            total = time.perf_counter() - start
            shares.append((total, reader.stats()["released_s"]))
        total, released = sorted(shares)[len(shares) // 2]
        share = released / total
        # Two threads can overlap only the released part: the held part is serial.
        bound = 2 / max(2 * (1 - share), 1)
        print(f"| {path.name} | {total * 1e3:.1f} | {released * 1e3:.1f} | {share:.0%} | {bound:.2f}x |")

    print("\n## Two threads, each reading its own copy of the file\n")
    print("Speed-up: one thread reading both copies in turn / two threads reading one copy each.\n")
    print("| file | pymarc 2T rec/s | mrrc 2T rec/s | gilkit_marc 2T rec/s | pymarc speed-up | mrrc speed-up | gilkit_marc speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path in files[:2]:
        n = 2 * READERS["gilkit_marc"](path)
        t = interleaved(two_copies(READERS, path), args.rounds)
        rates = [f"{n / t[f'{name} threads']:,.0f}" for name in READERS]
        ups = [f"{t[f'{name} serial'] / t[f'{name} threads']:.2f}x" for name in READERS]
        print(f"| {path.name} | " + " | ".join(rates + ups) + " |")

    print(
        """
## Reading records only (as mrrc's own threading benchmarks measure: count the records, touch no field)

One thread reading the file; two threads each reading its own copy, and their speed-up over
one thread reading both copies in turn. `lazy`: `lazy_fields=True`. Read-ahead (the default)
starts a worker only while a core is spare, so with two readers on two cores it mostly reads
as `readahead=False` does.

| file | library | 1T rec/s | 2T rec/s | 2T speed-up | 1T vs mrrc |
|---|---|---:|---:|---:|---:|"""
    )
    for path in files[:2]:
        n = COUNTS["gilkit_marc"](path)
        one, two = (interleaved(runs, args.rounds) for runs in (one_copy(COUNTS, path), two_copies(COUNTS, path)))
        for name in COUNTS:
            print(
                f"| {path.name} | {name} | {n / one[name]:,.0f} | {2 * n / two[f'{name} threads']:,.0f} "
                f"| {two[f'{name} serial'] / two[f'{name} threads']:.2f}x | {one['mrrc'] / one[name]:.2f}x |"
            )

    print("\n## gilkit_marc read-ahead parsing on and off (fully iterating fields)\n")
    print("One thread: records/s and CPU ms of the process (the worker's included). Two threads: each")
    print("reading its own copy; speed-up over one thread reading both copies with the same setting.\n")
    print("| file | readahead | 1T rec/s | 1T CPU ms | 2T rec/s | 2T speed-up |")
    print("|---|---|---:|---:|---:|---:|")
    for path in files[:2]:
        n = READERS["gilkit_marc"](path)
        one = interleaved(one_copy(READAHEAD, path), args.rounds)
        cpu = interleaved(one_copy(READAHEAD, path), args.rounds, time.process_time)
        two = interleaved(two_copies(READAHEAD, path), args.rounds)
        for k in READAHEAD:
            print(
                f"| {path.name} | {k} | {n / one[k]:,.0f} | {cpu[k] * 1e3:.1f} | {2 * n / two[f'{k} threads']:,.0f} "
                f"| {two[f'{k} serial'] / two[f'{k} threads']:.2f}x |"
            )

    print("\n## Ceiling: the benchmark's own loop\n")
    print("loop only: `iterate_fields` over records already built (GIL held throughout: Python code).")
    print("held: full read + iterate minus the GIL-released reading/framing/parsing on this thread")
    print("(readahead off). Two threads share one GIL, so their speed-up is at most total / held;")
    print("even if building objects cost nothing it would be at most (loop + released) / loop.\n")
    print("| file | library | full ms | loop only ms | loop share | max 2T speed-up now | max 2T if building were free |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for path in files[:2]:
        built = {
            "pymarc": list(pymarc.MARCReader(open(path, "rb"))),
            "gilkit_marc": list(gilkit_marc.MARCReader(open(path, "rb"))),
        }
        cpu = interleaved(
            {
                "pymarc full": functools.partial(READERS["pymarc"], path),
                "gilkit_marc full": functools.partial(READAHEAD["off"], path),
                "pymarc loop": functools.partial(iterate_fields, built["pymarc"]),
                "gilkit_marc loop": functools.partial(iterate_fields, built["gilkit_marc"]),
            },
            args.rounds,
            time.process_time,
        )
        released_runs: list[float] = []
        for _ in range(args.rounds):
            reader = gilkit_marc.MARCReader(path, readahead=False)
            iterate_fields(reader)
            released_runs.append(reader.stats()["released_s"])
        rel = {"pymarc": 0.0, "gilkit_marc": statistics.median(released_runs)}
        for lib in built:
            full, loop = cpu[f"{lib} full"], cpu[f"{lib} loop"]
            held = full - rel[lib]
            print(
                f"| {path.name} | {lib} | {full * 1e3:.1f} | {loop * 1e3:.1f} | {loop / full:.0%} "
                f"| {min(2.0, full / held):.2f}x | {min(2.0, (loop + rel[lib]) / loop):.2f}x |"
            )
        # Records kept alive make every later garbage collection slower: drop them.
        del built
        gc.collect()

    print("\n## A few fields per record (245 and 650, first $a of each)\n")
    print("`gilkit_marc lazy`: `MARCReader(..., lazy_fields=True)`, which builds only the fields looked up.")
    print("vs columns: gilkit_marc lazy against the others. 2T: speed-up of two threads, each reading its")
    print("own copy, over one thread reading both.\n")
    print(
        "| file | pymarc rec/s | mrrc rec/s | gilkit_marc rec/s | gilkit_marc lazy rec/s | vs pymarc | vs mrrc "
        "| pymarc 2T | mrrc 2T | gilkit_marc 2T | gilkit_marc lazy 2T |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for path in files[:2]:
        n = LOOKUPS["gilkit_marc"](path)
        t = interleaved(one_copy(LOOKUPS, path), args.rounds)
        two = interleaved(two_copies(LOOKUPS, path), args.rounds)
        rates = [f"{n / t[name]:,.0f}" for name in LOOKUPS]
        ups = [f"{two[f'{name} serial'] / two[f'{name} threads']:.2f}x" for name in LOOKUPS]
        print(
            f"| {path.name} | " + " | ".join(rates)
            + f" | {t['pymarc'] / t['gilkit_marc lazy']:.1f}x | {t['mrrc'] / t['gilkit_marc lazy']:.2f}x | "
            + " | ".join(ups) + " |"
        )

    print("\n## Reading into a list (every record kept; CPU ms of the process)\n")
    print("| file | pymarc list | mrrc list | gilkit_marc list | gilkit_marc read_all | vs pymarc (read_all) |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in files[:2]:
        kept: dict[str, Callable[[], object]] = {name: functools.partial(load, path) for name, load in LOAD.items()}
        kept["read_all"] = functools.partial(gilkit_marc.read_all, path)
        t = interleaved(kept, args.rounds, time.process_time)
        print(
            f"| {path.name} | {t['pymarc'] * 1e3:.0f} | {t['mrrc'] * 1e3:.0f} | {t['gilkit_marc'] * 1e3:.1f} "
            f"| {t['read_all'] * 1e3:.1f} | {t['pymarc'] / t['read_all']:.1f}x |"
        )

    print("\n## Writing (records/s, MARCWriter to BytesIO)\n")
    print("| file | pymarc | mrrc | gilkit_marc | vs pymarc | vs mrrc |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in files[:2]:
        records = {name: load(path) for name, load in LOAD.items()}
        writers: dict[str, Any] = {"pymarc": pymarc.MARCWriter, "mrrc": mrrc.MARCWriter, "gilkit_marc": gilkit_marc.MARCWriter}

        def write(name: str) -> None:
            w = writers[name](io.BytesIO())
            for r in records[name]:
                w.write(r)
            w.close(close_fh=False) if name != "mrrc" else w.close()

        t = interleaved({name: functools.partial(write, name) for name in writers}, args.rounds)
        n = len(records["gilkit_marc"])
        del records
        gc.collect()
        print(
            f"| {path.name} | {n / t['pymarc']:,.0f} | {n / t['mrrc']:,.0f} | {n / t['gilkit_marc']:,.0f} "
            f"| {t['pymarc'] / t['gilkit_marc']:.1f}x | {t['mrrc'] / t['gilkit_marc']:.2f}x |"
        )

    print("\n## Writing with two threads, each writing its own records to its own BytesIO\n")
    print("Speed-up: one thread writing both record lists in turn / two threads writing one each.\n")
    print("| file | pymarc 2T rec/s | mrrc 2T rec/s | gilkit_marc 2T rec/s | pymarc speed-up | mrrc speed-up | gilkit_marc speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for path in files[:2]:
        own = {name: [load(path), load(path)] for name, load in LOAD.items()}
        writer_classes: dict[str, Any] = {
            "pymarc": pymarc.MARCWriter, "mrrc": mrrc.MARCWriter, "gilkit_marc": gilkit_marc.MARCWriter,
        }  # fmt: skip

        def write_list(name: str, records: list[Any]) -> None:
            w = writer_classes[name](io.BytesIO())
            for r in records:
                w.write(r)
            w.close(close_fh=False) if name != "mrrc" else w.close()

        runs = {}
        for name in writer_classes:

            def serial(name: str = name) -> None:
                for records in own[name]:
                    write_list(name, records)

            def threaded(name: str = name) -> None:
                ts = [threading.Thread(target=write_list, args=(name, records)) for records in own[name]]
                for th in ts:
                    th.start()
                for th in ts:
                    th.join()

            runs[f"{name} serial"] = serial
            runs[f"{name} threads"] = threaded
        t = interleaved(runs, args.rounds)
        n = 2 * len(own["gilkit_marc"][0])
        del own
        gc.collect()
        rates = [f"{n / t[f'{name} threads']:,.0f}" for name in writer_classes]
        ups = [f"{t[f'{name} serial'] / t[f'{name} threads']:.2f}x" for name in writer_classes]
        print(f"| {path.name} | " + " | ".join(rates + ups) + " |")


if __name__ == "__main__":
    main()
