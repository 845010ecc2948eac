"""gilkit's own threads (pool helpers, which run the Executor too, and the tokio runtime's worker and
blocking threads) keep one Python thread state for their life: a `threading.local` set by a
callback is still there in the next callback on the same thread (PyO3 alone gives each outermost
attach a new thread state, PyO3 issues #5467 and #2495). The state is released when the thread
ends, left alone at interpreter exit, and a forked child never touches the parent's."""

from __future__ import annotations

import os
import threading
from collections import defaultdict

import gilkit_testext as ext
import pytest
from subproc import run_python

local = threading.local()


def count_on_this_thread() -> tuple[int, int]:
    """Bump this thread's counter (a `threading.local`); return (thread ident, new value)."""
    local.n = getattr(local, "n", 0) + 1
    return threading.get_ident(), local.n


def assert_each_thread_counts_on(calls: list[tuple[int, int]]) -> None:
    """Every thread's values go up by one from call to call: its local survived in between."""
    per_thread: dict[int, list[int]] = defaultdict(list)
    for ident, n in calls:
        per_thread[ident].append(n)
    for ident, values in per_thread.items():
        start = values[0]
        assert values == list(range(start, start + len(values))), (ident, values)


# Each driver calls the callback several times in a row on one gilkit thread, attaching for each.
DRIVERS = {
    "pool-helper": ext.pool_worker_calls,
    "runtime-worker": ext.runtime_worker_calls,
    "runtime-blocking": ext.runtime_blocking_calls,
}


@pytest.mark.parametrize("driver", DRIVERS.values(), ids=DRIVERS.keys())
def test_a_threading_local_survives_between_callbacks_on_a_gilkit_thread(driver) -> None:
    first = driver(count_on_this_thread, 5)
    idents = {ident for ident, _ in first}
    assert len(idents) == 1, "one driver call runs on one thread"
    assert idents != {threading.get_ident()}, "the callbacks ran on a gilkit thread"
    values = [n for _, n in first]
    # The thread may have run callbacks before (earlier tests): its count goes on from there.
    assert values == list(range(values[0], values[0] + 5)), values
    # A second run, possibly on another thread of the same kind: each thread still counts on.
    assert_each_thread_counts_on(first + driver(count_on_this_thread, 3))


def test_executor_workers_keep_their_threading_local() -> None:
    with ext.Executor(max_workers=1) as ex:
        calls = [ex.submit(count_on_this_thread).result(timeout=30) for _ in range(20)]
    assert_each_thread_counts_on(calls)
    # Twenty calls in a row on the pool reuse helpers; only a fresh state per call would leave
    # every thread's count at 1.
    assert max(n for _, n in calls) >= 2, calls


def test_a_thread_state_is_released_when_its_thread_ends() -> None:
    # Stopping the runtime ends its threads; each clears its kept state then, which drops the
    # values its thread-locals held.
    proc = run_python(
        """
        import gc, threading, weakref
        import gilkit_testext as ext

        class Token:
            pass

        local = threading.local()
        refs = []

        def keep_token():
            local.token = Token()
            refs.append(weakref.ref(local.token))

        ext.runtime_worker_calls(keep_token, 1)
        ext.runtime_blocking_calls(keep_token, 1)
        print("alive", [r() is not None for r in refs])
        assert ext.shutdown_runtime()
        gc.collect()
        print("released", [r() is None for r in refs])
        """,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["alive [True, True]", "released [True, True]"], proc.stdout
    assert proc.stderr == "", proc.stderr


def test_a_pool_helper_releases_its_state_when_it_retires() -> None:
    # A pool helper retires after 10 s without work and clears its kept state then. Nothing else
    # uses the pool in this process, so the helper that ran the callback does retire; the loop
    # waits for that however long the machine takes (bounded only by the subprocess timeout).
    proc = run_python(
        """
        import gc, threading, time, weakref
        import gilkit_testext as ext

        class Token:
            pass

        local = threading.local()
        refs = []

        def keep_token():
            local.token = Token()
            refs.append(weakref.ref(local.token))

        ext.pool_worker_calls(keep_token, 1)
        print("alive", refs[0]() is not None)
        while refs[0]() is not None:
            time.sleep(0.2)
            gc.collect()
        print("released")
        """,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["alive True", "released"], proc.stdout
    assert proc.stderr == "", proc.stderr


# What gilkit's threads are doing when the interpreter exits.
AT_EXIT = {
    # They ran callbacks (so each keeps a state) and wait for work.
    "idle": "",
    # Callbacks are running on a pool helper (through a daemon thread's interruptible call and an
    # Executor), a runtime worker and a blocking thread; each goes back into Rust and releases the
    # GIL there (as extension callbacks do), so the interpreter starts exiting meanwhile.
    # (A callback that waits for the GIL inside CPython itself, `time.sleep` say, is another
    # matter: on CPython < 3.14 the interpreter ends such a thread with `pthread_exit`, which
    # cannot unwind through Rust frames; that holds with or without kept states.)
    "busy": """
        def slow():
            ext.spin_released(5_000)
            count_on_this_thread()
        for driver in (ext.pool_worker_calls, ext.runtime_worker_calls, ext.runtime_blocking_calls):
            threading.Thread(target=driver, args=(slow, 100_000), daemon=True).start()
        ex = ext.Executor(max_workers=2)
        futures = [ex.submit(slow) for _ in range(1_000)]
        time.sleep(0.3)
    """,
}


@pytest.mark.parametrize("run", range(2))
@pytest.mark.parametrize("state", AT_EXIT.values(), ids=AT_EXIT.keys())
def test_interpreter_exit_with_kept_states_is_clean(state: str, run: int) -> None:
    proc = run_python(
        f"""
        import sys, threading, time
        import gilkit_testext as ext

        local = threading.local()

        def count_on_this_thread():
            local.n = getattr(local, "n", 0) + 1

        for driver in (ext.pool_worker_calls, ext.runtime_worker_calls, ext.runtime_blocking_calls):
            driver(count_on_this_thread, 3)
        {state}
        sys.exit(3)
        """,
        timeout=60,
    )
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert proc.stdout == "", proc.stdout
    assert proc.stderr == "", proc.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_parent_child_parent_each_keep_their_own_states() -> None:
    # The parent's gilkit threads keep states; the child has none of those threads, starts its
    # own (which keep states of their own), and the parent's threads go on counting afterwards.
    proc = run_python(
        """
        import os, sys, threading
        import gilkit_testext as ext

        local = threading.local()

        def count():
            local.n = getattr(local, "n", 0) + 1
            return threading.get_ident(), local.n

        drivers = (ext.pool_worker_calls, ext.runtime_worker_calls, ext.runtime_blocking_calls)
        ex = ext.Executor(max_workers=1)

        def use_all():
            calls = [c for d in drivers for c in d(count, 3)]
            calls += [ex.submit(count).result(timeout=10) for _ in range(3)]
            return calls

        def counts_on(calls):
            seen = {}
            for ident, n in calls:
                if ident in seen and n != seen[ident] + 1:
                    return False
                seen[ident] = n
            return True

        before = use_all()
        pid = os.fork()
        if pid == 0:
            code = 0 if counts_on(use_all() + use_all()) else 1
            sys.stdout.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        after = use_all()
        parents = {ident for ident, _ in before}
        print("child", os.waitstatus_to_exitcode(status))
        print("parent counts on", counts_on(before + after))
        print("a parent thread kept its count", any(i in parents and n > 3 for i, n in after))
        """,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == [
        "child 0",
        "parent counts on True",
        "a parent thread kept its count True",
    ], (proc.stdout, proc.stderr)
