"""Repository-wide pytest setup, loaded before every test folder's own `conftest.py`.

Ctrl-C tests send SIGINT to child interpreters and expect `KeyboardInterrupt`, which they get only
if this process does not ignore SIGINT (see `tests/support/sigint.py`'s `restore_default_sigint`):
CI runners and shell scripts start background jobs with SIGINT ignored.
"""

from __future__ import annotations

from sigint import restore_default_sigint

restore_default_sigint()
