"""Before/after benchmark of gilkit's thread owner (issue 13: one pool for every gilkit thread).

Times the calls whose threads moved onto the pool, for two builds of the test extension side by side
in one run: each round runs every case once with the baseline build and once with the candidate, in
alternating order, each in its own fresh interpreter; the figures are medians over rounds.

Cases (all from Python's main thread, the case where work leaves the calling thread):
- `detach_interruptible`, 0 µs of work (borrowed work: `pool::join`, unchanged design);
- `detach_interruptible_owned`, 0 s of work ('static work: a thread per call before, `pool::spawn`
  after);
- `Executor` + `NativeFn`: `submit` + `result()` of 2,000 tiny calls, 2 workers (own threads
  before, pool jobs after); a fresh executor per round, so worker start-up is included;
- `run_cpu` of 16 trivial items on 2 workers (`pool::join`).

Run (each SITE is a directory holding a built `gilkit_testext`, e.g. an unpacked wheel; `venv`
means the one installed in this interpreter's environment):
    .venv/bin/python benches/pool/compare.py --baseline SITE --candidate venv [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
import gilkit_testext as ext

def per_call(fn, calls):
    fn()  # warm: threads started, code paged in
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls

def executor(n):
    with ext.Executor(max_workers=2) as ex:
        start = time.perf_counter()
        futures = [ex.submit(ext.native_spin, 0) for _ in range(n)]
        for f in futures:
            f.result()
        return (time.perf_counter() - start) / n

print(json.dumps({
    "interruptible": per_call(lambda: ext.spin_interruptible(0), 2000),
    "owned": per_call(lambda: ext.sleep_uncooperative(0.0, 0), 500),
    "executor": executor(2000),
    "cpu16": per_call(lambda: ext.batch_trivial(16, workers=2), 500),
}))
"""

CASES = {
    "interruptible": "`detach_interruptible`, 0 µs, main thread",
    "owned": "`detach_interruptible_owned`, 0 s, main thread",
    "executor": "`Executor` submit+result, 2,000 tiny calls, 2 workers (per call)",
    "cpu16": "`run_cpu`, 16 trivial items, 2 workers (per batch)",
}


def run(site: str) -> dict[str, float]:
    env = dict(os.environ)
    if site != "venv":
        env["PYTHONPATH"] = site + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--candidate", required=True)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"baseline": [], "candidate": []}
    for i in range(args.rounds):
        order = [("baseline", args.baseline), ("candidate", args.candidate)]
        for name, site in order if i % 2 == 0 else reversed(order):
            runs[name].append(run(site))
    print(f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()} (shared with parallel builds, noisy)")
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"- rounds: {args.rounds}, alternating baseline/candidate, each a fresh interpreter; medians\n")
    print("| case | baseline | candidate | candidate / baseline |")
    print("|---|---:|---:|---:|")
    for key, label in CASES.items():
        before = statistics.median(r[key] for r in runs["baseline"])
        after = statistics.median(r[key] for r in runs["candidate"])
        print(f"| {label} | {before * 1e6:.2f} µs | {after * 1e6:.2f} µs | **{after / before:.2f}x** |")


if __name__ == "__main__":
    main()
