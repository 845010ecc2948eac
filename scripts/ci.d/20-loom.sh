#!/usr/bin/env bash
# Model-checks the batch executor's claim cursor (gilkit/src/batch/core.rs) with loom: every
# interleaving of two workers claiming and completing (`loom_claim_and_complete`), and of ordered
# streaming's worker and consumer claiming parts (`loom_ordered_claims`).
#
# `--cfg gilkit_loom` swaps the board's atomics and cells for loom's, which changes how the whole
# crate compiles, so this uses its own target directory under target/ and leaves the main build's
# artifacts alone. Bounded: the model is three slots and two workers (it explores in seconds);
# LOOM_MAX_PREEMPTIONS caps the search should the model grow. Most of the time is the one-off
# compile (a few minutes on 2 cores, then incremental).
set -euo pipefail
cd "$(dirname "$0")/../.."
main_target=${CARGO_TARGET_DIR:-target}
export CARGO_TARGET_DIR="$main_target/loom"
export RUSTFLAGS="--cfg gilkit_loom ${RUSTFLAGS:-}"
export LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-3}
# The models must actually run: `--exact` on their names, and a check that two tests passed (a
# renamed test would otherwise make this step pass by running nothing).
out=$(cargo test -p gilkit --lib --locked -- --exact batch::core::tests::loom_claim_and_complete \
    batch::core::tests::loom_ordered_claims 2>&1) || {
    printf '%s\n' "$out"
    exit 1
}
printf '%s\n' "$out" | tail -n 5
printf '%s\n' "$out" | grep -q "test result: ok. 2 passed" || {
    echo "20-loom: the loom models did not run (was loom_claim_and_complete or loom_ordered_claims renamed?)" >&2
    exit 1
}
