#!/usr/bin/env bash
# Runs both embedding benchmarks and writes benches/results/embed.md (release builds; needs `wrk`).
#   bash benches/embed/run.sh            # full: 5 rounds, 8 s per wrk cell
#   QUICK=1 bash benches/embed/run.sh    # a quick look: 2 rounds, 3 s per cell
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=5 duration=8
if [ "${QUICK:-}" = 1 ]; then rounds=2 duration=3; fi
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
tmp=$(mktemp -d)
python benches/embed/client.py --rounds "$rounds" --out "$tmp/client.md"
python benches/embed/service.py --duration "$duration" --out "$tmp/service.md"
mkdir -p benches/results
{ cat "$tmp/client.md"; echo; sed 's/^# /## /' "$tmp/service.md"; } > benches/results/embed.md
rm -r "$tmp"
echo "wrote benches/results/embed.md"
