#!/usr/bin/env bash
# Calls a Python model from 1, 10 and 100 concurrent tokio tasks: naive spawn_blocking + attach,
# a try_lock like akidb's, GilSemaphore (1 and 2 permits) and GilBatcher (1 ms wait and no wait),
# side by side in one run. Prints the machine, the command and a markdown table of medians over
# rounds (throughput, ratio to naive, p50/p99 latency, error rate, mean batch size) for
# benches/results/semaphore.md. The benchmark source: gilkit/examples/bench_semaphore.rs.
#
# Usage: bash benches/semaphore/run.sh [--rounds N] [--secs S]   (default 3 rounds of 1 s per cell)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--rounds 3 --secs 1)

cargo build --release --quiet -p gilkit --example bench_semaphore
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "- load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- python: $(python3 -c 'import sys; print(sys.version.split()[0])')"
echo "- command: bash benches/semaphore/run.sh ${args[*]}"
echo
"$CARGO_TARGET_DIR/release/examples/bench_semaphore" "${args[@]}"
