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


def restore_default_sigint() -> None:
    """Give this process Python's own SIGINT handler if it started with SIGINT ignored.

    Ctrl-C tests and benchmarks send SIGINT to child interpreters and expect `KeyboardInterrupt`.
    A child inherits an *ignored* SIGINT across `exec` (a handler is reset to the default, an
    ignore is not), and CPython leaves an inherited ignore in place instead of installing its
    handler. CI runners and shell scripts start background jobs with SIGINT ignored, so without
    this every Ctrl-C measurement would fail there for a reason that has nothing to do with the
    code. With a handler here, the children start with the default disposition, as they do from a
    terminal.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Whoever imports this sends SIGINT to children (benches/release/run.py runs outside pytest).
restore_default_sigint()

# A child program for `interrupt_after_ready`: format it with `call=<a Python expression>`.
CHILD_PRELUDE = """
import gilkit_testext as ext
print("READY", flush=True)
try:
    {call}
    print("RETURNED", flush=True)
except KeyboardInterrupt:
    print("CAUGHT KeyboardInterrupt", flush=True)
"""


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
