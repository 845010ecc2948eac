#!/usr/bin/env bash
# Runs the embedding benchmarks and writes benches/results/embed.md (release builds; needs `wrk`,
# installed from Debian here when missing).
#   bash benches/embed/run.sh            # full: 5 rounds, 8 s per wrk cell
#   QUICK=1 bash benches/embed/run.sh    # a quick look: 2 rounds, 3 s per cell
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=5 duration=8
if [ "${QUICK:-}" = 1 ]; then rounds=2 duration=3; fi
if ! command -v wrk >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get install -y wrk || { $sudo apt-get update && $sudo apt-get install -y wrk; }
fi
tmp=$(mktemp -d)
python benches/embed/client.py --rounds "$rounds" --out "$tmp/client.md"
python benches/embed/service.py --duration "$duration" --out "$tmp/service.md"
fair_rounds=2 fair_duration=20
if [ "${QUICK:-}" = 1 ]; then fair_rounds=1 fair_duration=10; fi
python benches/embed/fairness.py --rounds "$fair_rounds" --duration "$fair_duration" --out "$tmp/fairness.md"
mkdir -p benches/results
{
    cat "$tmp/client.md"
    echo
    sed 's/^# /## /' "$tmp/service.md"
    echo
    sed 's/^# /## /' "$tmp/fairness.md"
} > benches/results/embed.md
rm -r "$tmp"
echo "wrote benches/results/embed.md"
