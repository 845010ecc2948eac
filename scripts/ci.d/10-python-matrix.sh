#!/usr/bin/env bash
# Checks that `gilkit` compiles for every CPython PyO3 0.30 supports: 3.9 to 3.15 (GIL builds),
# the free-threaded 3.14t and 3.15t, and the stable ABI (`abi3`) from 3.9 and from 3.11 (where the
# buffer protocol joins it, so gilkit's zero-copy paths switch on). No interpreter is needed: each
# target is a PyO3 config file (PYO3_CONFIG_FILE). `cargo clippy` with warnings denied (so code
# that a version gate leaves unused fails too), no build, one crate, in one target
# directory of its own ($CARGO_TARGET_DIR/pyo3-matrix, apart from the normal build's): the
# dependencies that do not read the config (tokio, ...) are checked once, and only pyo3 and gilkit
# again for each target. The list here is the README's support matrix ("compiled"); keep them in
# step.
set -euo pipefail
cd "$(dirname "$0")/../.."
base="${CARGO_TARGET_DIR:-$PWD/target}/pyo3-matrix"
mkdir -p "$base"
base=$(cd "$base" && pwd)

# name  target_abi  build_flags
targets=(
    "cp39 CPython-gil_enabled-3.9 -"
    "cp310 CPython-gil_enabled-3.10 -"
    "cp311 CPython-gil_enabled-3.11 -"
    "cp312 CPython-gil_enabled-3.12 -"
    "cp313 CPython-gil_enabled-3.13 -"
    "cp314 CPython-gil_enabled-3.14 -"
    "cp315 CPython-gil_enabled-3.15 -"
    "cp314t CPython-free_threaded-3.14 Py_GIL_DISABLED"
    "cp315t CPython-free_threaded-3.15 Py_GIL_DISABLED"
    "abi3-py39 CPython-abi3-3.9 -"
    "abi3-py311 CPython-abi3-3.11 -"
)
failed=()
for target in "${targets[@]}"; do
    read -r name abi flags <<<"$target"
    version=${abi##*-}
    config="$base/$name.cfg"
    {
        echo "implementation=CPython"
        echo "version=$version"
        echo "shared=true"
        echo "target_abi=$abi"
        echo "pointer_width=64"
        [ "$flags" = - ] || echo "build_flags=$flags"
        echo "suppress_build_script_link_lines=true"
    } >"$config"
    printf '  %-11s ' "$name"
    if log=$(PYO3_CONFIG_FILE="$config" CARGO_TARGET_DIR="$base" \
        cargo clippy -p gilkit --locked --quiet -- -D warnings 2>&1); then
        echo ok
    else
        echo FAILED
        echo "$log" | tail -40
        failed+=("$name")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "gilkit does not compile for: ${failed[*]}" >&2
    exit 1
fi
