"""Each loader on the bundled corpus's real files, and broken files reported without stopping the rest."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from rag_fakes import CORPUS, HashEmbedder

from gilkit_rag import ParallelRAG, load_and_split

EXTENSIONS = ["txt", "md", "html", "json", "csv", "pdf", "txt.gz", "html.gz", "md.gz"]


def corpus_files() -> list[Path]:
    return sorted(p for p in (CORPUS / "docs").rglob("*") if p.is_file())


def test_corpus_has_every_format_and_a_few_hundred_documents() -> None:
    files = corpus_files()
    assert len(files) >= 300
    for ext in EXTENSIONS:
        assert any(p.name.endswith("." + ext) for p in files), ext


@pytest.mark.parametrize("ext", EXTENSIONS)
def test_every_corpus_file_of_a_format_loads(ext: str) -> None:
    files = [p for p in corpus_files() if p.name.endswith("." + ext) and (ext.endswith(".gz") or not p.name.endswith(".gz"))]
    assert files
    base = ext.removesuffix(".gz")
    for path in files:
        fmt, text, chunks = load_and_split(path)
        assert fmt == base
        assert text.strip() and chunks
        if base == "html":
            # Visible text only: no markup, no script or style content, the headings kept.
            assert "<p>" not in text and "<h2>" not in text and "analytics" not in text and "font-family" not in text
            assert "corpus navigation" in text
        if base == "json":
            assert "\nterm: " in text and "\ndefinition: " in text
        if base == "csv":
            assert text.startswith("term: ") and "\ndefinition: " in text
        if base in ("txt", "pdf"):
            assert "Devil's Dictionary" in text or "Jargon File" in text


def test_known_entries_are_in_their_documents(known_queries: list[dict[str, str]]) -> None:
    for q in known_queries:
        _, text, _ = load_and_split(CORPUS / q["source"])
        assert q["headword"].lower() in text.lower(), q


def test_pdf_text_layer_matches_the_plain_rendering() -> None:
    pdf = next(p for p in corpus_files() if p.suffix == ".pdf")
    _, text, _ = load_and_split(pdf)
    words = text.split()
    assert len(words) > 30
    assert words[0] in ("The",)  # the title line comes first


def test_chunks_point_into_the_text() -> None:
    path = next(p for p in corpus_files() if p.name.endswith(".md"))
    for splitter in ("character", "recursive", "semantic", "sentence", "tokens"):
        _, text, chunks = load_and_split(path, splitter=splitter, chunk_size=60, chunk_overlap=10)
        assert len(chunks) > 1
        for i, c in enumerate(chunks):
            assert c["position"] == i
            assert text[c["start_char"] : c["end_char"]] == c["text"]
            assert text.encode()[c["start_byte"] : c["end_byte"]].decode() == c["text"]


def test_broken_files_are_reported_and_the_rest_ingested(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    good = [p for p in corpus_files() if p.name.endswith((".txt", ".html", ".json"))][:3]
    for p in good:
        shutil.copy(p, docs / p.name)
    pdf = next(p for p in corpus_files() if p.suffix == ".pdf").read_bytes()
    (docs / "truncated.pdf").write_bytes(pdf[: len(pdf) // 2])
    (docs / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))  # a legacy encoding: stored
    (docs / "binary.txt").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00 binary, not text")
    (docs / "empty.md").write_bytes(b"")
    (docs / "broken.txt.gz").write_bytes(gzip.compress(b"some text")[:-12])
    (docs / "bad.json").write_text('{"title": "unterminated', encoding="utf-8")
    (docs / "ignored.docx").write_bytes(b"not a supported format, not even looked at")

    rag = ParallelRAG(tmp_path / "db", embedder=HashEmbedder())
    report = rag.ingest([docs], progress=False)

    assert report.documents == 4 and report.files == 9
    failed = {Path(f.path).name: f for f in report.failures}
    assert set(failed) == {"truncated.pdf", "binary.txt", "empty.md", "broken.txt.gz", "bad.json"}
    assert all(f.stage == "load" for f in failed.values())
    assert "binary data, not text" in failed["binary.txt"].reason
    assert "holds no text" in failed["empty.md"].reason
    assert "gzip" in failed["broken.txt.gz"].reason
    assert "cannot parse" in failed["truncated.pdf"].reason
    assert all(str(docs) in f.reason for f in failed.values()), "each reason names the file"
    assert rag.stats().documents == 4


def test_include_and_exclude_globs(tmp_path: Path, corpus: Path) -> None:
    rag = ParallelRAG(tmp_path / "db", embedder=HashEmbedder())
    report = rag.ingest([corpus], include=["devil/**"], exclude=["**/*.gz", "**/*.pdf"], progress=False)
    expected = [
        p for p in (corpus / "devil").iterdir() if not p.name.endswith(".gz") and not p.name.endswith(".pdf")
    ]
    assert report.files == len(expected) and report.documents == len(expected)
    assert set(rag.stats().formats) == {"txt", "md", "html", "json", "csv"}
    with pytest.raises(ValueError, match="invalid glob"):
        rag.ingest([corpus], include=["[unclosed"])
