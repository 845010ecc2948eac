#!/usr/bin/env bash
# Cold release build of the starter extension (gilkit + pyo3 + tokio) against the same two
# functions written with PyO3 alone (benches/build/plain), each in a fresh target directory,
# alternated run by run with farm-bench (the ratio is taken pair by pair). Also counts the crates
# each compiles. Writes nothing to the repository: copy the figures into benches/results/build.md.
# RUNS (default 2) pairs; CARGO_BUILD_JOBS as set by the caller (the project's machine: 2).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
scratch=$(mktemp -d /tmp/gilkit-build-bench.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
cargo_build='cargo build --release --locked --quiet'
for crate in starter benches/build/plain; do
    n=$(cargo tree --locked --manifest-path "$crate/Cargo.toml" -e normal,build --prefix none --no-dedupe 2>/dev/null |
        sed 's/ (\*)//' | sort -u | wc -l)
    echo "$crate: $n crates (normal and build dependencies, itself included)"
done
farm-bench -n "${RUNS:-2}" --warmup 0 --timeout 3000 \
    --vs "sh -c 'rm -rf $scratch/plain && exec $cargo_build --manifest-path $root/benches/build/plain/Cargo.toml --target-dir $scratch/plain'" \
    -- sh -c "rm -rf $scratch/starter && exec $cargo_build --manifest-path $root/starter/Cargo.toml --target-dir $scratch/starter"
