"""Columns of MARC fields: gilkit_marc.extract vs a pymarc loop vs mrrc's bulk path, side by side.

The job (what library data people do with pymarc plus pandas): for every record, the values of a
few fields as one column per field spec. Every contender builds the same columns:

- `extract 1T` / `extract 2T`: `gilkit_marc.extract(path, SPECS, threads=1 or 2)` (an Arrow table;
  parsing and column building in Rust, GIL released);
- `pymarc loop`: `pymarc.MARCReader` and the record API, one Python list per column;
- `mrrc bulk`: mrrc 0.9.2's fastest bulk path, `RecordBoundaryScanner().scan(buffer)` then
  `parse_batch_parallel(boundaries, buffer)` (Rust, rayon), then the same Python loop over its
  records (through mrrc's pymarc-style wrapper, as its `MARCReader` yields them); `mrrc parse only` is that path without building columns (a lower bound for mrrc).

Also: what keeping the file position after each record costs `MARCReader`, and the peak memory
(VmHWM of a child process) of `to_parquet` (streaming) against `extract` (the whole table in
memory) on inputs of 25, 50 and 100 MB.

    python benches/marc/bench_extract.py [--rounds 3] [--big-rounds 3] [--only threads]

`--only threads` runs just the thread-scaling section (about 10 s with `--big-rounds 9`).

Inputs: `mixed` = tests/data/mrrc/10k_records.mrc + realistic.mrc (12,000 records, 4.9 MB), and
`big.mrc` (benches/out/, >= 100 MB, the same recipe as bench_marc.py --big: the two files repeated).
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mrrc
import pymarc

import gilkit_marc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib import header  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "examples" / "marc-reader" / "tests" / "data" / "mrrc"
OUT = Path(__file__).resolve().parents[1] / "out"
SPECS = ["001", "020$a", "100$a", "245$a", "245", "260$c", "650$a"]


def sized_file(size: int) -> Path:
    """10k_records.mrc and realistic.mrc repeated to at least `size` bytes (whole records)."""
    OUT.mkdir(exist_ok=True)
    names = {100_000_000: "big.mrc", 50_000_000: "half.mrc", 25_000_000: "quarter.mrc"}
    path = OUT / names.get(size, f"{size}.mrc")
    if not path.exists():
        chunk = b"".join((DATA / name).read_bytes() for name in ["10k_records.mrc", "realistic.mrc"])
        path.write_bytes(chunk * (size // len(chunk) + 1))
    return path


def big_file() -> Path:
    """>= 100 MB: bench_marc.py --big's file (the same recipe)."""
    return sized_file(100_000_000)


def columns_from(records: Any) -> dict[str, list[Any]]:
    """The same columns with a pymarc-style record API (pymarc and mrrc both have it)."""
    cols: dict[str, list[Any]] = {spec: [] for spec in SPECS}
    parsed = [(spec, *spec.partition("$")[::2]) for spec in SPECS]
    for record in records:
        for spec, tag, code in parsed:
            if record is None:
                cols[spec].append(None)
                continue
            values = []
            for field in record.get_fields(tag):
                if code:
                    values.extend(field.get_subfields(code))
                elif field.is_control_field():
                    values.append(field.data)
                else:
                    values.append(field.value())
            cols[spec].append(values)
    return cols


def pymarc_loop(path: Path) -> int:
    with open(path, "rb") as fh:
        return len(columns_from(pymarc.MARCReader(fh))["001"])


def mrrc_records(path: Path) -> list[Any]:
    buffer = path.read_bytes()
    boundaries = mrrc.RecordBoundaryScanner().scan(buffer)
    return mrrc.parse_batch_parallel(boundaries, buffer)  # type: ignore[no-any-return]


def mrrc_bulk(path: Path) -> int:
    # mrrc's pymarc-style wrapper (what its MARCReader yields) around each parsed record.
    return len(columns_from(mrrc._wrap_record(r) for r in mrrc_records(path))["001"])


def extract(path: Path, threads: int) -> int:
    return gilkit_marc.extract(path, SPECS, threads=threads).num_rows  # type: ignore[no-any-return]


class Unseekable:
    """A BytesIO that says it cannot seek: read the same way, no position kept."""

    def __init__(self, data: bytes) -> None:
        self.inner = io.BytesIO(data)

    def readinto(self, b: Any) -> int:
        return self.inner.readinto(b)

    def seekable(self) -> bool:
        return False


def count(reader: Any) -> int:
    return sum(1 for _ in reader)


def interleaved(fns: Mapping[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each, run in turn each round (a load change hits all alike)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def interleaved_with_cpu(
    fns: Mapping[str, Callable[[], object]], rounds: int
) -> tuple[dict[str, float], dict[str, float]]:
    """As `interleaved`, plus the median CPU seconds of each call (user + system, all threads)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    cpus: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            fn()
            wall = time.perf_counter() - t
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            times[name].append(wall)
            cpus[name].append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return (
        {name: statistics.median(ts) for name, ts in times.items()},
        {name: statistics.median(cs) for name, cs in cpus.items()},
    )


def schedstats() -> dict[int, tuple[int, int]]:
    """Per thread of this process: (ns on a CPU, ns runnable but waiting for a CPU), from
    /proc/self/task/*/schedstat (empty where the kernel does not provide it)."""
    stats = {}
    for task in Path("/proc/self/task").glob("*"):
        try:
            on_cpu, waiting, _ = (task / "schedstat").read_text().split()
        except (OSError, ValueError):
            continue
        stats[int(task.name)] = (int(on_cpu), int(waiting))
    return stats


def blocked_share(fn: Callable[[], object], rounds: int) -> tuple[float, float, int]:
    """Median share of the call's wall time the worker threads spent blocked: neither on a CPU
    nor waiting for one, i.e. waiting for each other (a lock, the read ahead, the end of the
    batch). Load from other processes shows up as waiting for a CPU, not as blocked, so this
    measures the serial part even on a busy machine. Workers: the threads other than this one
    that ran at least 5% of the call."""
    me = threading.get_native_id()
    shares, queued, workers = [], [], 0
    for _ in range(rounds):
        before, t = schedstats(), time.perf_counter()
        fn()
        wall_ns = (time.perf_counter() - t) * 1e9
        after = schedstats()
        blocked, waited = [], []
        for tid, (cpu1, wait1) in after.items():
            cpu0, wait0 = before.get(tid, (0, 0))
            if tid != me and cpu1 - cpu0 > 0.05 * wall_ns:
                blocked.append(max(0.0, wall_ns - (cpu1 - cpu0) - (wait1 - wait0)) / wall_ns)
                waited.append((wait1 - wait0) / wall_ns)
        if blocked:
            shares.append(sum(blocked) / len(blocked))
            queued.append(sum(waited) / len(waited))
            workers = max(workers, len(blocked))
    if not shares:
        return float("nan"), float("nan"), 0
    return statistics.median(shares), statistics.median(queued), workers


def threads_section(big: Path, rounds: int) -> None:
    """1 thread vs 2 on big.mrc: the ratio, the CPU share, and how much ran on one thread only."""
    n = extract(big, 2)
    t, cpu = interleaved_with_cpu(
        {"extract 1T": lambda: extract(big, 1), "extract 2T": lambda: extract(big, 2)}, rounds
    )
    size = big.stat().st_size / 1e6
    print(f"## Threads: {big.name} ({n:,} records, {size:.0f} MB), {rounds} rounds\n")
    print("CPU share: CPU seconds (user + system, all threads) per wall second; 1.0 and 2.0 on a quiet machine.")
    print("Single-thread time: wall seconds of the 2T run when only one thread ran, `2 x wall - CPU`")
    print("(also counts time a worker waited for a core taken by other load: an upper bound on the serial")
    print("part); serial fraction: that time over the 2T run's CPU seconds; Amdahl bound: the 2T speed-up")
    print("that serial fraction allows, `1 / (f + (1 - f) / 2)`.\n")
    print("| contender | seconds | records/s | MB/s | CPU s | CPU share |")
    print("|---|---|---|---|---|---|")
    for name, secs in t.items():
        print(f"| {name} | {secs:.3f} | {n / secs:,.0f} | {size / secs:,.0f} | {cpu[name]:.3f} | {cpu[name] / secs:.2f} |")
    wall2, cpu2 = t["extract 2T"], cpu["extract 2T"]
    single = min(wall2, max(0.0, 2 * wall2 - cpu2))
    fraction = min(1.0, single / cpu2)
    if cpu["extract 1T"] / t["extract 1T"] < 0.9:
        print(
            f"\n**The machine was busy** (1 thread got {cpu['extract 1T'] / t['extract 1T']:.2f} of a core): "
            "the wall times, the ratio and the serial-fraction estimate below say little; re-run on a quiet machine."
        )
    blocked, queued, workers = blocked_share(lambda: extract(big, 2), rounds)
    print(
        f"\nWorkers of the 2T run blocked (neither on a CPU nor waiting for one: waiting for each other, "
        f"from /proc/self/task/*/schedstat; unaffected by other load): **{blocked:.1%}** of the run "
        f"(mean of its {workers} workers, median of {rounds} rounds; they waited for a CPU taken by other "
        f"load {queued:.1%} of it). A 2T/1T ratio of about "
        f"{2 * (1 - blocked):.2f}x follows on a quiet machine if nothing else limits it (memory bandwidth, caches)."
    )
    print(
        f"\n2 threads vs 1: **{t['extract 1T'] / wall2:.2f}x** (CPU share {cpu2 / wall2:.2f}); "
        f"single-thread time {single * 1e3:.0f} ms of {wall2 * 1e3:.0f} ms, serial fraction {fraction:.1%}, "
        f"Amdahl bound {1 / (fraction + (1 - fraction) / 2):.2f}x; CPU cost of the second thread "
        f"{cpu2 / cpu['extract 1T'] - 1:+.1%}\n"
    )


PEAK = """
import sys, gilkit_marc
mode, path, out = sys.argv[1:4]
specs = {specs!r}
if mode == "to_parquet":
    gilkit_marc.to_parquet(path, out, specs, overwrite=True)
elif mode == "extract":
    t = gilkit_marc.extract(path, specs)
else:
    pass
# VmHWM: this process's own peak (ru_maxrss would include the parent's, inherited at fork).
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def peak_rss_mb(mode: str, path: Path, out: Path) -> float:
    result = subprocess.run(
        [sys.executable, "-c", PEAK.format(specs=SPECS), mode, str(path), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stdout.split()[-1]) / 1024  # kB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big-rounds", type=int, default=3)
    parser.add_argument("--only", choices=["threads"], help="run one section only")
    args = parser.parse_args()
    command = f"python benches/marc/bench_extract.py --rounds {args.rounds} --big-rounds {args.big_rounds}"
    if args.only:
        command += f" --only {args.only}"
    print(header("gilkit_marc.extract benchmark: columns of MARC fields", command))
    print(
        "- the machine is shared with parallel builds and benchmarks of other workers: absolute "
        "figures move between runs; the ratios are measured side by side (interleaved rounds, medians)\n"
        f"- columns: {SPECS}\n"
    )
    if args.only == "threads":
        threads_section(big_file(), args.big_rounds)
        return

    with tempfile.TemporaryDirectory() as tmp:
        mixed = Path(tmp) / "mixed.mrc"
        mixed.write_bytes(b"".join((DATA / n).read_bytes() for n in ["10k_records.mrc", "realistic.mrc"]))
        n = extract(mixed, 1)
        assert n == pymarc_loop(mixed) == mrrc_bulk(mixed) == 12_000
        t = interleaved(
            {
                "pymarc loop": lambda: pymarc_loop(mixed),
                "mrrc bulk": lambda: mrrc_bulk(mixed),
                "mrrc parse only": lambda: len(mrrc_records(mixed)),
                "extract 1T": lambda: extract(mixed, 1),
                "extract 2T": lambda: extract(mixed, 2),
            },
            args.rounds,
        )
        print(f"## The same columns, {mixed.name} ({n:,} records, {mixed.stat().st_size / 1e6:.1f} MB), {args.rounds} rounds\n")
        print("| contender | records/s | extract 1T is | extract 2T is |")
        print("|---|---|---|---|")
        for name, secs in t.items():
            print(
                f"| {name} | {n / secs:,.0f} | {secs / t['extract 1T']:.1f}x faster | {secs / t['extract 2T']:.1f}x faster |"
            )
        print()

    path = DATA / "10k_records.mrc"
    data = path.read_bytes()
    t = interleaved(
        {
            "MARCReader(path)": lambda: count(gilkit_marc.MARCReader(path)),
            "MARCReader(open(path, 'rb'))": lambda: count(gilkit_marc.MARCReader(open(path, "rb"))),
            "MARCReader(Unseekable(data))": lambda: count(gilkit_marc.MARCReader(Unseekable(data))),
            "MARCReader(BytesIO(data))": lambda: count(gilkit_marc.MARCReader(io.BytesIO(data))),
        },
        args.rounds * 3,
    )
    print(f"## What keeping the file position costs ({path.name}, counting records, {args.rounds * 3} rounds)\n")
    print("A path keeps no position; `open(path, 'rb')` keeps it with one `lseek` per record; `BytesIO` with one")
    print("`seek` call per record; `Unseekable` is the same object claiming it cannot seek (no position kept).\n")
    print("| reader | records/s | cost per record |")
    print("|---|---|---|")
    pairs = {
        "MARCReader(path)": None,
        "MARCReader(open(path, 'rb'))": "MARCReader(path)",
        "MARCReader(Unseekable(data))": None,
        "MARCReader(BytesIO(data))": "MARCReader(Unseekable(data))",
    }
    for name, base in pairs.items():
        cost = "-" if base is None else f"{(t[name] - t[base]) / 10_000 * 1e9:+,.0f} ns vs {base}"
        print(f"| {name} | {10_000 / t[name]:,.0f} | {cost} |")
    print()

    big = big_file()
    threads_section(big, args.big_rounds)

    sizes = [sized_file(25_000_000), sized_file(50_000_000), big]
    print(f"## Peak memory (the child process's own peak RSS, VmHWM), input {' / '.join(f'{p.stat().st_size / 1e6:.0f}' for p in sizes)} MB\n")
    print("`to_parquet` streams (one round of 32,768 records at a time): its peak should not grow with the input;")
    print("`extract` keeps the whole table. `quarter`/`half` are the same recipe as big.mrc, smaller.\n")
    print("| run | " + " | ".join(f"{p.name} MB" for p in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.parquet"
        for mode in ["none", "to_parquet", "extract"]:
            peaks = [peak_rss_mb(mode, p, out) for p in sizes]
            label = {"none": "python + import gilkit_marc", "to_parquet": "to_parquet", "extract": "extract"}[mode]
            print(f"| {label} | " + " | ".join(f"{m:.0f}" for m in peaks) + " |")
    print()


if __name__ == "__main__":
    main()
