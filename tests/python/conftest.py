"""Shared fixtures for the gilkit test-extension suite.

Helpers live in `tests/support/` (on pytest's path), not here: several test folders have a
`conftest.py`, so `from conftest import ...` would pick up whichever was loaded last.
"""

from __future__ import annotations

import pytest
from subproc import run_python


@pytest.fixture
def python_subprocess():
    return run_python
