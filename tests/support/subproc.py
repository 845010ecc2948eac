"""Run a snippet of Python in a fresh interpreter (the same virtualenv), for process-level tests:
fork, interpreter exit, hangs that must be killed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) with ``python -c``; return the finished process (output captured)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
