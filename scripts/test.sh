#!/usr/bin/env bash
# Runs every test: formatting, clippy with warnings denied, the Rust workspace tests (unit, integration,
# trybuild, doctests of the guide), then pytest over the test extension and every example package, then
# the extra steps in scripts/ci.d/ (name order; 60-python313.sh runs the Python suite again on CPython
# 3.13, in a Debian chroot prepared in the background from the start). Fails on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step prints its elapsed time when the next one starts; the last prints the breakdown.
step_name=
step_started=$SECONDS
timings=()
step() {
    if [ -n "$step_name" ]; then
        local took=$((SECONDS - step_started))
        printf '<== %s: %dm%02ds\n' "$step_name" $((took / 60)) $((took % 60))
        timings+=("$(printf '%5ds  %s' "$took" "$step_name")")
    fi
    step_name=$*
    step_started=$SECONDS
    printf '\n==> %s\n' "$*"
}

# The CPython 3.13 step's network-bound part (a Debian chroot and PyPI packages) runs in the
# background while the builds below run, in its own process group; stopped (its trap undoes its
# mounts) if this script ends first.
setsid bash scripts/ci.d/60-python313.sh prepare >/dev/null 2>&1 &
prepare_pid=$!
trap 'if jobs -rp | grep -qx "$prepare_pid"; then kill -TERM -- -"$prepare_pid"; fi' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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
printf 'time per step:\n'
printf '  %s\n' "${timings[@]}"
printf '  %5ds  in all\n' "$SECONDS"
