"""Cost of one attach/detach round trip (`Python::attach` with an empty body) from a Rust thread:
before and after gilkit's threads kept their Python thread state, side by side in one run; and the
same with a small Python callback inside the attach (reads and bumps a `threading.local`), the
pattern of a worker that calls back into Python once per item.

- "before": a plain Rust thread, as PyO3 leaves it and as gilkit's pool helpers were before: each
  outermost attach creates a Python thread state (`PyGILState_Ensure`) and destroys it on release.
- "after": a helper of gilkit's pool, which keeps one thread state for its life (see
  `gilkit/src/thread_state.rs`): an attach re-attaches that state.

Both run the same loop (`attach_round_trip_ns` in `tests/testext/src/threads.rs`), alternating in
blocks of `--per-block` attaches, so the machine's load drifts over both alike; the figures are
medians over the blocks, and the ratio is taken block by block (then its median). Without kept
states the callback case also pays for the `threading.local` starting empty on every call.

Run:
    .venv/bin/python benches/pool/attach.py [--blocks 41] [--per-block 20000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gilkit_testext as ext  # noqa: E402
from benchlib import header  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=41)
    parser.add_argument("--per-block", type=int, default=20_000)
    args = parser.parse_args()

    local = threading.local()

    def bump_local() -> None:
        local.n = getattr(local, "n", 0) + 1

    ext.attach_round_trip_ns(2, 1_000)  # warm: a pool helper started, code paged in
    cases = {
        "empty attach": ext.attach_round_trip_ns(args.blocks, args.per_block),
        "attach + callback (bumps a threading.local)": ext.attach_round_trip_ns(
            args.blocks, args.per_block, bump_local
        ),
    }
    load = os.getloadavg()[0]

    command = f"python benches/pool/attach.py --blocks {args.blocks} --per-block {args.per_block}"
    print(header("Attach/detach round trip on a gilkit thread: before and after kept thread states", command))
    print(f"- load average (1 min) at the end: {load:.1f}\n")
    print("| case | plain Rust thread (before), ns | gilkit pool helper (after), ns | after / before |")
    print("|---|---:|---:|---:|")
    for name, (plain, pool) in cases.items():
        ratios = [p / b for b, p in zip(plain, pool)]
        print(
            f"| {name} | {statistics.median(plain):.0f} ({min(plain):.0f} to {max(plain):.0f}) "
            f"| {statistics.median(pool):.0f} ({min(pool):.0f} to {max(pool):.0f}) "
            f"| **{statistics.median(ratios):.2f}x** ({min(ratios):.2f}x to {max(ratios):.2f}x) |"
        )
    print(
        f"\nMedians over {args.blocks} blocks of {args.per_block} attaches (range in parentheses); "
        "the ratio is taken block by block, each pair run back to back."
    )

if __name__ == "__main__":
    main()
