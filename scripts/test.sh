#!/usr/bin/env bash
# Runs every test: formatting, clippy with warnings denied, the Rust workspace tests (unit, integration,
# trybuild, doctests of the guide), then pytest over the test extension and every example package, then
# the extra steps in scripts/ci.d/ (name order). Fails on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "setup"
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

step "cargo test"
cargo test --workspace --locked

step "gilkit without default features (call sites on std::time::Instant instead of quanta)"
cargo clippy -p gilkit --no-default-features --all-targets --locked -- -D warnings
cargo test -p gilkit --no-default-features --lib --locked

step "pytest"
python -m pytest -q

for extra in scripts/ci.d/*.sh; do
    [ -e "$extra" ] || continue
    step "$extra"
    bash "$extra"
done
step "all tests passed"
