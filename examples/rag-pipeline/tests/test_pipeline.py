"""The pipeline from Python: alignment under injected embedding failures, incremental re-ingest,
a kill in the middle of an ingest, progress, GIL release, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rag_fakes import HashEmbedder
from gil_probe import assert_releases_gil
from stats_schema import assert_schema

from gilkit_rag import (
    DatabaseNotFoundError,
    ModelMismatchError,
    ParallelRAG,
    ProgressUpdate,
    load_and_split_many,
)


def write_docs(folder: Path, n: int, marker: str = "") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"doc{i:03d}.md"
        paras = [f"Paragraph {j} of document number {i}{marker}: " + "words " * 20 for j in range(4)]
        p.write_text("\n\n".join(paras), encoding="utf-8")
        paths.append(p)
    return paths


def assert_aligned(rag: ParallelRAG) -> int:
    """Every stored chunk carries its own vector: querying with a chunk's text finds that chunk
    first with similarity 1. Returns the number of chunks checked."""
    hits = rag.query("anything", k=1_000_000)
    for hit in hits:
        top = rag.query(hit.text, k=1)[0]
        assert top.text == hit.text and top.score > 0.9999, "a chunk is stored with another chunk's vector"
    return len(hits)


def test_stats_and_report_keys_and_types(tmp_path: Path) -> None:
    """The native dicts behind `stats()` and `ingest()` (derived from the Rust structs): exact keys
    and value types; durations are float seconds."""
    write_docs(tmp_path / "docs", 3)
    (tmp_path / "docs" / "broken.pdf").write_bytes(b"not a pdf")
    rag = ParallelRAG(tmp_path / "db", embedder=HashEmbedder(), max_workers=2)
    report = rag.ingest([tmp_path / "docs"], chunk_size=120, chunk_overlap=0, progress=False)
    assert_schema(
        rag._db.stats(),
        {
            "documents": int,
            "chunks": int,
            "dead_rows": int,
            "segments": int,
            "bytes": int,
            "model": str,
            "dim": int,
            "formats": dict,
        },
    )
    assert {type(v) for v in vars(report.timings).values()} == {float}
    assert set(vars(report.timings)) == {"discover", "load", "split", "embed", "store"}
    assert len(report.failures) == 1
    failure = report.failures[0]
    assert (type(failure.path), failure.stage, type(failure.reason), failure.failed_chunks) == (str, "load", str, 0)


def test_failed_batches_are_reported_and_never_stored_misaligned(tmp_path: Path) -> None:
    write_docs(tmp_path / "docs", 20)
    # Every batch holding a chunk of document 7 fails, also on retry.
    emb = HashEmbedder(fail_if=lambda t: "document number 7:" in t)
    rag = ParallelRAG(tmp_path / "db", embedder=emb, max_workers=2)
    report = rag.ingest([tmp_path / "docs"], chunk_size=120, chunk_overlap=0, embed_batch=3, retries=1, retry_backoff=0.001, progress=False)

    failed = {Path(f.path).name for f in report.failures}
    assert "doc007.md" in failed
    assert all(f.stage == "embed" and "injected embedding failure" in f.reason for f in report.failures)
    assert report.documents == 20 - len(failed)
    n = assert_aligned(rag)
    assert n == report.chunks == rag.stats().chunks
    assert not any("number 7:" in h.text for h in rag.query("Paragraph 1 of document number 7", k=n))
    # Retried: a failing batch was attempted twice, the retry in a model call of its own (how many
    # batches the model's batcher merged into one call depends on timing; this does not).
    assert emb.failed_calls >= 2
    assert emb.calls > emb.failed_calls  # and the stored documents were embedded

    # A healthy embedder next time stores exactly what failed.
    rag2 = ParallelRAG(tmp_path / "db", embedder=HashEmbedder())
    again = rag2.ingest([tmp_path / "docs"], chunk_size=120, chunk_overlap=0, progress=False)
    assert again.documents == len(failed) and again.unchanged == report.documents
    assert rag2.stats().documents == 20
    assert_aligned(rag2)


def test_embedder_returning_wrong_shapes_fails_the_batch(tmp_path: Path) -> None:
    write_docs(tmp_path / "docs", 3)

    class Short(HashEmbedder):
        def embed_passages(self, texts: list[str]) -> np.ndarray:
            return super().embed_passages(texts)[:-1]  # one vector missing

    report = ParallelRAG(tmp_path / "db", embedder=Short()).ingest([tmp_path / "docs"], progress=False)
    assert report.documents == 0 and len(report.failures) == 3
    reasons = [f.reason for f in report.failures]
    assert all("one vector per text" in r for r in reasons), reasons


def test_incremental_reingest(tmp_path: Path) -> None:
    paths = write_docs(tmp_path / "docs", 10)
    emb = HashEmbedder()
    rag = ParallelRAG(tmp_path / "db", embedder=emb)
    first = rag.ingest([tmp_path / "docs"], progress=False)
    assert (first.documents, first.unchanged) == (10, 0)

    calls = emb.calls
    second = rag.ingest([tmp_path / "docs"], progress=False)
    assert (second.documents, second.unchanged, second.chunks) == (0, 10, 0)
    assert emb.calls == calls, "an unchanged file must cause no embedding"

    paths[3].write_text("Completely different: a text about lighthouses.", encoding="utf-8")
    third = rag.ingest([tmp_path / "docs"], progress=False)
    assert (third.documents, third.unchanged) == (1, 9)
    hits = rag.query("Completely different: a text about lighthouses.", k=3)
    assert Path(hits[0].source).name == "doc003.md" and hits[0].score > 0.9999
    texts = [h.text for h in rag.query("x", k=10_000)]
    assert not any("document number 3:" in t for t in texts), "old chunks of the changed file are gone"
    assert rag.stats().documents == 10
    assert_aligned(rag)


def test_reingest_removes_deleted_files(tmp_path: Path) -> None:
    paths = write_docs(tmp_path / "docs", 6)
    other = write_docs(tmp_path / "other", 2, marker=" elsewhere")
    rag = ParallelRAG(tmp_path / "db", embedder=HashEmbedder())
    rag.ingest([tmp_path / "docs", tmp_path / "other"], progress=False)
    paths[2].unlink()
    other[0].unlink()

    kept = rag.ingest([tmp_path / "docs"], progress=False, prune=False)
    assert kept.removed == [] and rag.stats().documents == 8

    report = rag.ingest([tmp_path / "docs"], progress=False)
    assert [Path(s).name for s in report.removed] == ["doc002.md"]
    assert report.unchanged == 5 and report.documents == 0
    sources = {h.source for h in rag.query("anything", k=10_000)}
    assert str(paths[2].resolve()) not in sources, "the deleted file's chunks are gone"
    assert str(other[0].resolve()) in sources, "files outside the directories given are untouched"
    assert rag.stats().documents == 7
    assert_aligned(rag)


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[3])
    from rag_fakes import HashEmbedder
    from gilkit_rag import ParallelRAG
    rag = ParallelRAG(sys.argv[1], embedder=HashEmbedder(delay=0.05))
    rag.ingest([sys.argv[2]], embed_batch=4, commit_every=8, chunk_size=120, chunk_overlap=0, progress=False)
    print("finished", flush=True)
    """
)


def test_kill_during_ingest_then_reopen(tmp_path: Path) -> None:
    write_docs(tmp_path / "docs", 60)
    db = tmp_path / "db"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(db), str(tmp_path / "docs"), str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
    )
    try:
        # Wait for a few commits, then kill without warning.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            segments = list(db.glob("seg-*.seg")) if db.exists() else []
            if len(segments) >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the ingest finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)

    rag = ParallelRAG(db, embedder=HashEmbedder())
    stats = rag.stats()
    assert 0 < stats.documents < 60
    assert_aligned(rag)
    report = rag.ingest([tmp_path / "docs"], chunk_size=120, chunk_overlap=0, progress=False)
    assert report.unchanged == stats.documents and report.documents == 60 - stats.documents
    assert not list(db.glob("*.tmp"))
    assert rag.stats().documents == 60
    assert_aligned(rag)


GATED_INGEST_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, sys.argv[3])
    from rag_fakes import HashEmbedder
    from gilkit_rag import ParallelRAG

    class Gated(HashEmbedder):
        # After 10 batches (a few commits), waits until the test has seen a half-done ingest.
        def embed_passages(self, texts):
            if self.calls == 10:
                deadline = time.monotonic() + 60
                while not os.path.exists(sys.argv[4]) and time.monotonic() < deadline:
                    time.sleep(0.01)
            return super().embed_passages(texts)

    rag = ParallelRAG(sys.argv[1], embedder=Gated(delay=0.005))
    rag.ingest([sys.argv[2]], embed_batch=2, commit_every=2, chunk_size=120, chunk_overlap=0, progress=False)
    """
)


def test_queries_read_the_last_commit_while_another_process_ingests(tmp_path: Path) -> None:
    docs, db, gate = tmp_path / "docs", tmp_path / "db", tmp_path / "go"
    paths = write_docs(docs, 30)
    rag = ParallelRAG(db, embedder=HashEmbedder())
    first = rag.ingest([docs], chunk_size=120, chunk_overlap=0, progress=False)
    # Version 2 of every document, shorter: the other process replaces them all, one or two per
    # commit, and then compacts (dead rows outnumber live ones), deleting every old segment.
    for i, p in enumerate(paths):
        p.write_text(f"Revised document {i}: short now.", encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-c", GATED_INGEST_SCRIPT, str(db), str(docs), str(Path(__file__).parent), str(gate)]
    )
    revised_seen: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            hits = rag.query("anything", k=100_000)  # never DatabaseLockedError
            by_source: dict[str, list[int]] = {}
            revised = set()
            for h in hits:
                by_source.setdefault(h.source, []).append(h.position)
                if h.text.startswith("Revised"):
                    revised.add(h.source)
            # A committed state: every document whole, each from one version.
            assert len(by_source) == 30
            for source, positions in by_source.items():
                assert sorted(positions) == list(range(len(positions))), source
                assert len(positions) == 1 or source not in revised, "a document mixes two versions"
            assert rag.stats().documents == 30
            revised_seen.append(len(revised))
            if 0 < len(revised) < 30:
                gate.touch()  # seen mid-ingest: let the writer finish
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert any(0 < n < 30 for n in revised_seen), "no query ran while the ingest was half done"
    assert revised_seen == sorted(revised_seen), "commits are seen in order, never undone"
    final = rag.query("anything", k=100_000)
    assert len(final) == 30 and all(h.text.startswith("Revised") for h in final)
    assert rag.stats().chunks == 30 < first.chunks
    assert rag.stats().dead_rows == 0, "the writer compacted at the end"
    assert_aligned(rag)


def test_a_query_in_another_thread_does_not_wait_for_the_ingest(tmp_path: Path) -> None:
    write_docs(tmp_path / "docs", 12)
    started, gate = threading.Event(), threading.Event()

    class Gated(HashEmbedder):
        def embed_passages(self, texts: list[str]) -> np.ndarray:
            if self.calls == 3:  # after three one-document commits: hold the ingest here
                started.set()
                gate.wait(timeout=60)
            return super().embed_passages(texts)

    rag = ParallelRAG(tmp_path / "db", embedder=Gated())
    ingest = threading.Thread(
        target=rag.ingest, args=([tmp_path / "docs"],), kwargs={"progress": False, "commit_every": 1}
    )
    ingest.start()
    try:
        assert started.wait(timeout=60)
        # The ingest is blocked inside its embedder; the query answers from its last commit.
        sources = {h.source for h in rag.query("anything", k=1000)}
        assert len(sources) == 3 == rag.stats().documents
    finally:
        gate.set()
        ingest.join(timeout=60)
    assert rag.stats().documents == 12


def test_progress_counts_add_up(tmp_path: Path) -> None:
    write_docs(tmp_path / "docs", 40)
    updates: list[ProgressUpdate] = []
    rag = ParallelRAG(tmp_path / "db", embedder=HashEmbedder(delay=0.01))
    report = rag.ingest([tmp_path / "docs"], progress=updates.append, embed_batch=4)
    assert updates, "the callback was called"
    last = updates[-1]
    assert last.files_total == last.files_done == 40
    assert last.chunks_total == last.chunks_done == report.chunks
    done = [u.chunks_done for u in updates]
    assert done == sorted(done)


def test_cpu_stages_release_the_gil(corpus: Path) -> None:
    files = sorted(p for p in corpus.rglob("*") if p.is_file()) * 3
    docs, chunks, failed = assert_releases_gil(lambda: load_and_split_many(files, max_workers=2))
    assert docs == len(files) and failed == 0 and chunks >= docs


def test_ingest_releases_the_gil(tmp_path: Path, corpus: Path) -> None:
    rag = ParallelRAG(tmp_path / "db", embedder=HashEmbedder())
    report = assert_releases_gil(lambda: rag.ingest([corpus / "devil"], progress=False))
    assert report.documents > 100


def test_errors(tmp_path: Path) -> None:
    write_docs(tmp_path / "docs", 2)
    with pytest.raises(DatabaseNotFoundError, match="gilkit-rag ingest"):
        ParallelRAG(tmp_path / "nothing", embedder=HashEmbedder()).query("x")
    rag = ParallelRAG(tmp_path / "db", embedder=HashEmbedder())
    with pytest.raises(ValueError, match="overlap"):
        rag.ingest([tmp_path / "docs"], chunk_size=100, chunk_overlap=100)
    with pytest.raises(ValueError, match="unknown splitter"):
        rag.ingest([tmp_path / "docs"], splitter="paragraphs")
    rag.ingest([tmp_path / "docs"], progress=False)
    other = ParallelRAG(tmp_path / "db", embedder=HashEmbedder(model_id="test/other"))
    with pytest.raises(ModelMismatchError, match="test/other"):
        other.query("x")
    with pytest.raises(ModelMismatchError):
        other.ingest([tmp_path / "docs"], progress=False)
    with pytest.raises(ValueError, match="empty"):
        rag.query("   ")
    with pytest.raises(TypeError):
        ParallelRAG(tmp_path / "db", embedder=42)


def test_query_results_are_typed_and_sorted(tmp_path: Path) -> None:
    write_docs(tmp_path / "docs", 5)
    rag = ParallelRAG(tmp_path / "db", embedder=HashEmbedder())
    rag.ingest([tmp_path / "docs"], chunk_size=200, chunk_overlap=0, progress=False)
    hits = rag.query(("Paragraph 2 of document number 4: " + "words " * 20).rstrip(), k=3)
    assert len(hits) == 3
    assert hits[0].score > 0.9999 and Path(hits[0].source).name == "doc004.md"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    source_text = Path(hits[0].source).read_text(encoding="utf-8")
    assert source_text[hits[0].start_char : hits[0].end_char] == hits[0].text


INTERRUPT_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[3])
    from rag_fakes import HashEmbedder
    from gilkit_rag import ParallelRAG
    rag = ParallelRAG(sys.argv[1], embedder=HashEmbedder(delay=0.05))
    try:
        rag.ingest([sys.argv[2]], embed_batch=4, commit_every=8, chunk_size=120, chunk_overlap=0, progress=False)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
    print("finished", flush=True)
    """
)


def test_ctrl_c_stops_the_ingest_and_keeps_what_was_committed(tmp_path: Path) -> None:
    write_docs(tmp_path / "docs", 60)
    db = tmp_path / "db"
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPT_SCRIPT, str(db), str(tmp_path / "docs"), str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(db.glob("seg-*.seg")) if db.exists() else []) < 2:
        time.sleep(0.01)
    assert proc.poll() is None, "the ingest finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in out
    rag = ParallelRAG(db, embedder=HashEmbedder())
    stats = rag.stats()
    assert 0 < stats.documents < 60, "stopped early, with the committed documents kept"
    assert_aligned(rag)


def test_tqdm_progress_bars(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_docs(tmp_path / "docs", 5)
    report = ParallelRAG(tmp_path / "db", embedder=HashEmbedder(delay=0.15)).ingest([tmp_path / "docs"], progress=True, embed_batch=2)
    err = capsys.readouterr().err
    assert report.documents == 5
    assert "documents" in err and "embedded" in err and f"{report.chunks}/{report.chunks}" in err
