#!/usr/bin/env bash
# The two published crates package and build from their packaged sources alone: `cargo package`
# with verification builds gilkit-macros and gilkit from the .crate files (gilkit against the
# packaged gilkit-macros, through cargo's local overlay of the workspace's packages), so a file
# the crates need but do not ship (a guide chapter, a README) fails here. `--allow-dirty` only
# lets a developer run it with uncommitted changes; CI's tree is clean.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo package -p gilkit-macros -p gilkit --locked --allow-dirty
