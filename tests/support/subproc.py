"""Run a snippet of Python in a fresh interpreter (the same virtualenv), for process-level tests:
fork, interpreter exit, hangs that must be killed; and the fork check built on it."""

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


def assert_works_after_fork(before: str, works: str, timeout: float = 60) -> None:
    """In a fresh interpreter with ``gilkit_testext`` imported as ``ext``: run ``before``, fork, and
    assert that the expression ``works`` is true in the child (exit status 0; an exception there is
    exit status 4), then again in the parent. A child stuck on threads of the parent's that do not
    exist in it fails by ``timeout`` instead of hanging."""
    proc = run_python(
        f"""
        import os, time, gilkit_testext as ext
        {before}
        pid = os.fork()
        if pid == 0:
            try:
                os._exit(0 if {works} else 3)
            except BaseException as e:
                print("CHILD ERROR", repr(e), flush=True)
                os._exit(4)
        _, status = os.waitpid(pid, 0)
        print("CHILD", os.waitstatus_to_exitcode(status))
        assert {works}
        """,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "CHILD 0", proc.stdout
