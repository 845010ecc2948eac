#!/usr/bin/env bash
# Sets up a fresh checkout: a virtualenv in .venv (with the system's site packages, so maturin and
# pytest preinstalled on this machine kind are reused), the Python packages the tests, benchmarks and
# examples need (from PyPI, listed in requirements-dev.txt), and every maturin package of the repo
# built in release mode into it. Safe to run again: cargo and pip only redo what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ ! -x .venv/bin/python ]; then
    python3 -m venv --system-site-packages .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

# The test extension first, then the examples in name order (the RAG pipeline, last, uses the
# embedding client's crate directly, not its Python package).
for pkg in tests/testext examples/*/; do
    pkg=${pkg%/}
    [ -f "$pkg/pyproject.toml" ] || continue
    echo "==> building $pkg"
    # A package's test hooks (cargo feature `test-hooks`, never in a published wheel) are part of
    # the development install its tests run against.
    features=()
    if grep -q '^test-hooks = ' "$pkg/Cargo.toml"; then features=(--features test-hooks); fi
    (cd "$root/$pkg" && maturin develop --release --quiet "${features[@]}")
done
