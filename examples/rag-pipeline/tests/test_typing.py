"""The typed surface: the stub matches the extension (mypy's stubtest) and the package type-checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "gilkit_rag"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)


def test_stub_matches_the_extension() -> None:
    pytest.importorskip("mypy")
    out = run("mypy.stubtest", "gilkit_rag._native")
    assert out.returncode == 0, out.stdout + out.stderr


def test_package_type_checks() -> None:
    pytest.importorskip("mypy")
    out = run("mypy", str(PACKAGE))
    assert out.returncode == 0, out.stdout + out.stderr
