#!/usr/bin/env bash
# The getting-started chapter cannot rot: checks that docs/getting-started.md shows the starter's
# files unchanged (each block after a `<!-- file: PATH -->` line), then builds `starter/` (an
# extension outside the workspace, depending on gilkit by path as an outside crate would) into the
# active virtualenv with maturin and runs its tests. Shares the workspace's target directory, so
# the dependencies it has in common with the test extension are not rebuilt.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

python - <<'PY'
import pathlib, re, sys
page = pathlib.Path("docs/getting-started.md").read_text()
blocks = re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```\n", page, re.S)
if not blocks:
    sys.exit("docs/getting-started.md: no `<!-- file: ... -->` block found")
for path, shown in blocks:
    if pathlib.Path(path).read_text() != shown:
        sys.exit(f"docs/getting-started.md shows {path} differently from the file; copy the file in")
print(f"getting-started.md shows {len(blocks)} starter files as they are")
PY

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
cd starter
maturin develop --release --quiet
python -m pytest -q -p no:cacheprovider
