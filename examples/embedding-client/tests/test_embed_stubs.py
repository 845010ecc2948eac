"""The type stubs match the compiled module (mypy's stubtest) and the package type-checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "gilkit_embed"


def test_stubtest_agrees_with_the_native_module():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "gilkit_embed._native",
            "gilkit_embed.errors",
            "gilkit_embed.testing",
            "gilkit_embed.service",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_package_type_checks():
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(PACKAGE)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
