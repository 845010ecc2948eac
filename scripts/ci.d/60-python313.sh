#!/usr/bin/env bash
# Runs the full Python test suite on a second CPython, 3.13, for real (3.11, the machine's own
# Python, runs it in scripts/test.sh's "pytest" step). Why 3.13: it is the python3 of Debian 13
# "trixie", the newest stable Debian, and the default Python of many current systems.
#
# How: a Debian trixie chroot made with `debootstrap --variant=minbase` (python3.13 and its venv
# module only) under target/chroot/ (ignored by git, created once and reused); the repository's
# wheels (tests/testext and examples/*) built OUTSIDE it with the host's Rust toolchain, in the
# workspace's target directory (so every crate that does not depend on pyo3 is shared with the
# 3.11 build), maturin running the chroot's python3.13 through a two-line wrapper; then a venv
# inside the chroot with requirements-dev.txt from PyPI and the wheels, and the same pytest
# invocation as scripts/test.sh over the repository, bind-mounted at /src.
#
# Strict: every test must pass and none may be skipped (a skip here means a test did not run on
# 3.13; a test that cannot run must be deselected below, with its reason, and the docs say so).
# The step checks that the modules imported are the 3.13 wheels just built.
#
# Mounts (/proc, /sys, /dev, /dev/pts, a private /dev/shm, /src) exist only while the step runs:
# an EXIT trap unmounts them on success, failure or Ctrl-C, and mounts left by a killed run are
# unmounted first, so neither the next run nor `rm -rf target` ever meets one.
#
# `60-python313.sh prepare` does only the network-bound part (the chroot, the venv and its PyPI
# packages; no mounts): scripts/test.sh starts it in the background at its beginning, so the
# downloads overlap the builds. A lock lets one run at a time work on the chroot: the step waits for
# the preparation, then finds everything done.
#
# Needs root (chroot, mount) and network access to a Debian mirror and PyPI. Environment:
#   PY313_CHROOT   where the chroot lives (default target/chroot/trixie-py313)
#   DEBIAN_MIRROR  the mirror for debootstrap (default: the host's Debian mirror from its apt
#                  sources, else http://deb.debian.org/debian)
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
me=60-python313
if [ "$(id -u)" != 0 ]; then
    echo "$me: needs root (debootstrap, chroot and mount); run the test command as root, as CI does" >&2
    exit 1
fi
mode=${1:-all}
case $mode in
all | prepare) ;;
*)
    echo "usage: $0 [prepare]" >&2
    exit 2
    ;;
esac

chroot_dir=${PY313_CHROOT:-$repo/target/chroot/trixie-py313}
suite=trixie
packages=python3.13,python3.13-venv,ca-certificates
venv=/opt/py313 # inside the chroot
work=$repo/target/chroot/py313-work
wheels=$work/wheels

# Prints how long the phase that just ended took (chroot, wheels, venv, pytest).
phase_started=$SECONDS
phase_done() {
    echo "$me: $1 in $((SECONDS - phase_started)) s"
    phase_started=$SECONDS
}

if [ "$(id -u)" != 0 ]; then
    echo "$me: needs root (debootstrap, chroot, mount); run the test command as root" >&2
    exit 1
fi

mkdir -p "$(dirname "$chroot_dir")"
if [ "$mode" = prepare ]; then
    exec >"$chroot_dir.prepare.log" 2>&1 # the step prints it
fi
exec 9>"$chroot_dir.lock"
if ! flock -n 9; then
    echo "$me: waiting for the other run on $chroot_dir (the background preparation) to finish"
    flock 9
fi
if [ "$mode" = all ] && [ -f "$chroot_dir.prepare.log" ]; then
    echo "$me: the background preparation said:"
    sed 's/^/    /' "$chroot_dir.prepare.log"
    rm -f "$chroot_dir.prepare.log"
fi

# Mounts under the chroot (or a half-made one: debootstrap mounts /proc there), deepest first so a
# parent is never unmounted before its children.
mounted_under() {
    findmnt -rn -o TARGET | awk -v a="$chroot_dir/" -v b="$chroot_dir.partial/" \
        'index($0 "/", a) == 1 || index($0 "/", b) == 1' | sort -r
}
unmount_all() {
    local target
    for target in $(mounted_under); do
        umount "$target" 2>/dev/null || umount -l "$target"
    done
}
unmount_all # a killed earlier run may have left some
if [ -n "$(mounted_under)" ]; then
    # rm -rf through a bind mount of /dev would empty the host's /dev: never go on.
    echo "$me: cannot unmount $(mounted_under | tr '\n' ' '); unmount them by hand" >&2
    exit 1
fi
# From here on, whatever this run mounts (or debootstrap does) is unmounted however it ends.
trap unmount_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

host_mirror() {
    # The first Debian (not security) mirror in the host's apt sources, in either format.
    local uri
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '/^(deb |URIs:)/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) { print $i; exit } }')
    echo "${uri:-http://deb.debian.org/debian}"
}

stamp=$chroot_dir/.gilkit-chroot
want_stamp="$suite minbase $packages"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want_stamp" ]; then
    if ! command -v debootstrap >/dev/null; then
        echo "$me: installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
    fi
    mirror=${DEBIAN_MIRROR:-$(host_mirror)}
    echo "$me: creating a Debian $suite chroot in $chroot_dir from $mirror"
    rm -rf --one-file-system "$chroot_dir" "$chroot_dir.partial" # nothing mounted: checked above
    log=$(mktemp)
    if ! debootstrap --variant=minbase --include="$packages" "$suite" "$chroot_dir.partial" "$mirror" >"$log" 2>&1; then
        tail -30 "$log" >&2
        rm -f "$log"
        echo "$me: debootstrap failed" >&2
        exit 1
    fi
    rm -f "$log"
    echo "$want_stamp" >"$chroot_dir.partial/.gilkit-chroot"
    mv "$chroot_dir.partial" "$chroot_dir"
fi

# The chroot resolves names and trusts certificate authorities as the host does (a proxy with its
# own CA must be trusted inside too, or pip cannot reach PyPI).
cp /etc/resolv.conf "$chroot_dir/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$chroot_dir/etc/ssl/certs/ca-certificates.crt"
# A clean /tmp each run (the previous run's Ray sessions, mypy cache, test report).
find "$chroot_dir/tmp" -xdev -mindepth 1 -delete

# A clean environment inside: only what is listed here (and a proxy, if the host uses one).
in_chroot() {
    local pass=() var
    for var in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY PIP_INDEX_URL; do
        [ -z "${!var:-}" ] || pass+=("$var=${!var}")
    done
    chroot "$chroot_dir" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
        PYTHONDONTWRITEBYTECODE=1 \
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
        ${pass[@]+"${pass[@]}"} "$@"
}

# The venv and the test requirements (pip needs no mounts). requirements-dev.txt is copied in: the
# repository is mounted only below.
if [ ! -x "$chroot_dir$venv/bin/python" ]; then
    in_chroot /usr/bin/python3.13 -m venv "$venv"
fi
echo "$me: installing requirements-dev.txt into the chroot's venv"
cp requirements-dev.txt "$chroot_dir/tmp/requirements-dev.txt"
in_chroot "$venv/bin/python" -m pip install --quiet -r /tmp/requirements-dev.txt
phase_done "chroot and venv ready"
[ "$mode" = all ] || exit 0

mount -t proc proc "$chroot_dir/proc"
mount -t sysfs -o ro sysfs "$chroot_dir/sys"
mount --bind /dev "$chroot_dir/dev"
mount --bind /dev/pts "$chroot_dir/dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$chroot_dir/dev/shm" # private: Ray's object store
mkdir -p "$chroot_dir/src"
mount --bind "$repo" "$chroot_dir/src" # writable, as for the 3.11 run: stubtest writes .mypy_cache

# Build the wheels on the host. maturin asks the interpreter about itself (version, ABI, platform
# tags): this wrapper answers as the chroot's python3.13. pyo3's build script would run the path
# the interpreter reports (/usr/bin/python3.13, the host's has none), so it gets a PyO3 config
# file instead, written from what that same interpreter says of its build.
mkdir -p "$work/bin"
cat >"$work/bin/python3.13" <<EOF
#!/bin/sh
exec chroot "$chroot_dir" /usr/bin/python3.13 "\$@"
EOF
chmod +x "$work/bin/python3.13"
"$work/bin/python3.13" - >"$work/pyo3-cp313.cfg" <<'EOF'
import struct, sys, sysconfig
var = sysconfig.get_config_var
flags = [f for f in ("Py_DEBUG", "Py_REF_DEBUG", "Py_TRACE_REFS", "COUNT_ALLOCS", "Py_GIL_DISABLED") if var(f)]
print("implementation=CPython")
print("version=%d.%d" % sys.version_info[:2])
print("shared=%s" % str(bool(var("Py_ENABLE_SHARED"))).lower())
print("abi3=false")
print("lib_name=python%d.%d" % sys.version_info[:2])
print("pointer_width=%d" % (8 * struct.calcsize("P")))
if flags:
    print("build_flags=" + ",".join(flags))
EOF
grep -qx 'version=3.13' "$work/pyo3-cp313.cfg"
export PYO3_CONFIG_FILE="$work/pyo3-cp313.cfg"
rm -rf "$wheels"
mkdir -p "$wheels"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
built=0
for pkg in tests/testext examples/*/; do
    pkg=${pkg%/}
    [ -f "$pkg/pyproject.toml" ] || continue
    built=$((built + 1))
    echo "$me: building the $pkg wheel for CPython 3.13"
    # With its test hooks, as scripts/setup.sh builds it for 3.11: the same tests run on both.
    features=()
    if grep -q '^test-hooks = ' "$pkg/Cargo.toml"; then features=(--features test-hooks); fi
    (cd "$pkg" && maturin build --release --quiet --locked --compatibility linux \
        --interpreter "$work/bin/python3.13" --out "$wheels" "${features[@]}")
done
# One wheel per package, each for CPython 3.13 (not for another interpreter, not abi3).
if [ "$(find "$wheels" -name '*-cp313-cp313-linux_*.whl' | wc -l)" != "$built" ]; then
    echo "$me: expected $built CPython 3.13 wheels, got: $(ls "$wheels")" >&2
    exit 1
fi
phase_done "wheels built"

# The wheels, replacing the previous run's.
mkdir -p "$chroot_dir/opt/wheels"
rm -f "$chroot_dir"/opt/wheels/*.whl
cp "$wheels"/*.whl "$chroot_dir/opt/wheels/"
in_chroot sh -c "$venv/bin/python -m pip install --quiet --no-deps --force-reinstall /opt/wheels/*.whl"
in_chroot "$venv/bin/python" -m pip check

# The modules the tests import are the wheels just installed, not something from /src.
in_chroot sh -c "cd /src && $venv/bin/python -" <<EOF
import importlib, sys
assert sys.version_info[:2] == (3, 13), sys.version
for name in ("gilkit_testext", "gilkit_marc", "gilkit_embed", "gilkit_rag"):
    module = importlib.import_module(name)
    assert module.__file__.startswith("$venv/"), (name, module.__file__)
print("$me: CPython", sys.version.split()[0], "imports the 3.13 wheels from $venv")
EOF
phase_done "wheels installed"

# The full suite, as scripts/test.sh runs it (pytest.ini: same test paths, timeout); no pytest
# cache or bytecode left in the tree; a junit report outside /src counts what ran.
echo "$me: pytest on CPython 3.13"
rm -f "$chroot_dir/tmp/py313-junit.xml"
in_chroot sh -c "cd /src && $venv/bin/python -m pytest -q -p no:cacheprovider --junitxml=/tmp/py313-junit.xml"
phase_done "pytest ran"
python3 - "$chroot_dir/tmp/py313-junit.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
suites = ET.parse(sys.argv[1]).getroot()
suites = [suites] if suites.tag == "testsuite" else list(suites)
count = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
print("60-python313: CPython 3.13:", ", ".join(f"{v} {k}" for k, v in count.items()))
if count["skipped"]:
    sys.exit("60-python313: tests were skipped on CPython 3.13; every test must run (see -ra above)")
if count["tests"] == 0 or count["failures"] or count["errors"]:
    sys.exit("60-python313: the suite did not pass on CPython 3.13")
EOF
