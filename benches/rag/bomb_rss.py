"""Peak memory of an ingest of decompression bombs (issue 16, finding 4), appended to stdout as a
Markdown table for benches/results/rag.md.

Each case runs in a fresh child process (its peak RSS is the child's ru_maxrss); the baseline is a
child that imports gilkit_rag and opens the database without ingesting anything, measured in the
same run. Bombs are written under benches/out/ (not committed):

- zeros-1g: 1 GiB of zero bytes as `.txt.gz` (about 1 MB on disk);
- text-256m: 256 MiB of real corpus text (16 KB of it, repeated), as `.txt.gz`.

The embedder is a trivial callable (no model in memory), so the figures are the loader's.

Run: .venv/bin/python benches/rag/bomb_rss.py
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "benches" / "out" / "rag-bombs"
CORPUS = ROOT / "examples" / "rag-pipeline" / "corpus" / "docs"

CHILD = r"""
import json, resource, sys, tempfile
import numpy as np
from gilkit_rag import CallableEmbedder, ParallelRAG
emb = CallableEmbedder(lambda texts: np.ones((len(texts), 8), dtype=np.float32), model_id="bench/ones")
db = tempfile.mkdtemp() + "/db"
rag = ParallelRAG(db, embedder=emb, max_workers=2)
report = None
if sys.argv[1] != "-":
    r = rag.ingest([sys.argv[1]], progress=False)
    report = {"documents": r.documents, "failures": [f.reason.split(": ", 1)[-1] for f in r.failures]}
print(json.dumps({"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "report": report}))
"""


def make_bombs() -> dict[str, Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    zeros = OUT / "zeros-1g.txt.gz"
    if not zeros.exists():
        with gzip.open(zeros, "wb", compresslevel=9) as f:
            block = bytes(1 << 20)
            for _ in range(1024):
                f.write(block)
    text = OUT / "text-256m.txt.gz"
    if not text.exists():
        # 16 KB of real text: repeats within gzip's 32 KB window, so the file stays small.
        sample = "\n\n".join(p.read_text(encoding="utf-8") for p in sorted(CORPUS.rglob("*.txt"))).encode()[:16_000]
        with gzip.open(text, "wb", compresslevel=9) as f:
            written = 0
            while written < 256 << 20:
                f.write(sample)
                written += len(sample)
    return {"zeros-1g": zeros, "text-256m": text}


def measure(arg: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, arg], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    bombs = make_bombs()
    base = measure("-")
    rows = [("baseline (import, open, no ingest)", "-", base["maxrss_kib"], "")]
    for name, path in bombs.items():
        m = measure(str(path))
        rows.append((name, f"{path.stat().st_size / 1e6:.2f} MB", m["maxrss_kib"], "; ".join(m["report"]["failures"])))
    print("| case | on disk | peak RSS MB | over baseline MB | outcome |")
    print("|---|---|---|---|---|")
    for name, size, kib, outcome in rows:
        print(f"| {name} | {size} | {kib / 1024:.0f} | {(kib - base['maxrss_kib']) / 1024:+.0f} | {outcome or '-'} |")


if __name__ == "__main__":
    main()
