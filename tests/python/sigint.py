"""Send Ctrl-C (SIGINT) to a child Python process while it is inside a call, and time the response.

The child prints ``READY`` just before the call and ``CAUGHT ...`` when the call raises
KeyboardInterrupt. The parent records when it sends SIGINT and when the ``CAUGHT`` line arrives; the
difference is the interrupt latency (plus a pipe hop). Shared by the tests and benches/release.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time


def interrupt_after_ready(code: str, settle: float = 0.3, timeout: float = 30.0) -> tuple[float, str]:
    """Run ``code`` (which prints READY, then calls the long operation and prints CAUGHT <type> when
    it raises) and send SIGINT ``settle`` seconds after READY. Returns (seconds from SIGINT to CAUGHT,
    the child's full output). Raises AssertionError if the child does not report CAUGHT in time."""
    child = subprocess.Popen(
        [sys.executable, "-u", "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        output.append(line)
        assert line.strip() == "READY", f"child did not get ready: {line!r}"
        time.sleep(settle)
        sent = time.monotonic()
        os.kill(child.pid, signal.SIGINT)
        deadline = sent + timeout
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            output.append(line)
            if line.startswith("CAUGHT"):
                return time.monotonic() - sent, "".join(output)
        raise AssertionError("no CAUGHT line from the child:\n" + "".join(output))
    finally:
        child.kill()
        child.wait()
