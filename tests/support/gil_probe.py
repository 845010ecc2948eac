"""Deterministic proof that a call releases (or holds) the GIL.

How it works: a ticker thread increments a counter and sleeps briefly (``time.sleep`` releases the
GIL, so the caller can always get it back). The probe raises the switch interval to 100 s, so the
interpreter never takes the GIL away from a thread that is running bytecode: the only way the ticker
can advance while ``fn`` runs is for ``fn`` to release the GIL itself. The count of ticks observed
during the call is therefore exactly 0 when the GIL is held throughout, and positive when it is
released for long enough for the OS to schedule the ticker (``fn`` should run for ~50 ms or more).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable


class _Ticker:
    def __init__(self) -> None:
        self.count = 0
        self._stop = False
        self._running = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gil-probe-ticker", daemon=True)

    def _run(self) -> None:
        self._running.set()
        while not self._stop:
            self.count += 1
            time.sleep(0.0005)

    def __enter__(self) -> "_Ticker":
        self._thread.start()
        self._running.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join()


def ticks_during(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Run ``fn`` on this thread; return (ticks the other thread made meanwhile, fn's result)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(100)
    try:
        with _Ticker() as ticker:
            time.sleep(0.01)  # let the ticker reach its loop
            before = ticker.count
            result = fn()
            after = ticker.count
        return after - before, result
    finally:
        sys.setswitchinterval(old)


def assert_releases_gil(fn: Callable[[], Any]) -> Any:
    """Assert that ``fn`` lets another Python thread run while it works; return its result."""
    ticks, result = ticks_during(fn)
    assert ticks > 0, "the ticker thread never ran: the call held the GIL throughout"
    return result


def assert_holds_gil(fn: Callable[[], Any]) -> Any:
    """Assert that ``fn`` keeps the GIL throughout (the control case); return its result."""
    ticks, result = ticks_during(fn)
    assert ticks == 0, f"the ticker thread ran {ticks} times: the call released the GIL"
    return result
