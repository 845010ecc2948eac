#!/usr/bin/env bash
# Fuzzes gilkit_marc's record parser for a bounded time (default 60 s; MARC_FUZZ_SECONDS overrides)
# from the committed corpus. Needs a nightly toolchain; installs cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$0")/../../examples/marc-reader/fuzz"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "50-marc-fuzz: no nightly toolchain (rustup toolchain install nightly); cannot fuzz" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
seconds=${MARC_FUZZ_SECONDS:-60}
# Run on a scratch copy so CI does not grow the committed corpus.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp corpus/parse_record/* "$scratch"/
cargo +nightly fuzz run parse_record "$scratch" -- -max_total_time="$seconds" -max_len=65536 -timeout=10
