"""Repository-wide pytest setup, loaded before every test folder's own `conftest.py`.

Ctrl-C tests send SIGINT to child interpreters and expect `KeyboardInterrupt`. A child inherits an
*ignored* SIGINT across `exec` (a handler is reset to the default, an ignore is not), and CPython
leaves an inherited ignore in place instead of installing its handler. CI runners and shell scripts
start background jobs with SIGINT ignored, so without this every Ctrl-C test would fail there for a
reason that has nothing to do with the code. Restoring Python's handler here makes the children
start with the default disposition, as they do from a terminal.
"""

from __future__ import annotations

import signal

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
