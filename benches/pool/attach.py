"""Cost of one attach/detach round trip (`Python::attach` with an empty body) from a Rust thread:
before and after gilkit's threads kept their Python thread state, side by side in one run.

- "before": a plain Rust thread, as PyO3 leaves it and as gilkit's pool helpers were before: each
  outermost attach creates a Python thread state (`PyGILState_Ensure`) and destroys it on release.
- "after": a helper of gilkit's pool, which keeps one thread state for its life (see
  `gilkit/src/thread_state.rs`): an attach re-attaches that state.

Both run the same loop (`attach_round_trip_ns` in `tests/testext/src/threads.rs`), alternating in
blocks of `--per-block` attaches, so the machine's load drifts over both alike; the figures are
medians over the blocks, and the ratio is taken block by block (then its median).

Run:
    .venv/bin/python benches/pool/attach.py [--blocks 41] [--per-block 20000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gilkit_testext as ext  # noqa: E402
from benchlib import header  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=41)
    parser.add_argument("--per-block", type=int, default=20_000)
    args = parser.parse_args()

    ext.attach_round_trip_ns(2, 1_000)  # warm: a pool helper started, code paged in
    plain, pool = ext.attach_round_trip_ns(args.blocks, args.per_block)
    ratios = [p / b for b, p in zip(plain, pool)]
    load = os.getloadavg()[0]

    command = f"python benches/pool/attach.py --blocks {args.blocks} --per-block {args.per_block}"
    print(header("Attach/detach round trip on a gilkit thread: before and after kept thread states", command))
    print(f"- load average (1 min) at the end: {load:.1f}\n")
    print("| thread | ns per attach (median) | min | max |")
    print("|---|---:|---:|---:|")
    for name, values in (
        ("plain Rust thread (PyO3 default; gilkit's helpers before)", plain),
        ("gilkit pool helper (kept thread state)", pool),
    ):
        print(f"| {name} | {statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f} |")
    print(
        f"\nafter / before, block by block: median **{statistics.median(ratios):.2f}x** "
        f"(range {min(ratios):.2f}x to {max(ratios):.2f}x over {len(ratios)} blocks)"
    )


if __name__ == "__main__":
    main()
