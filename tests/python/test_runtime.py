"""The shared runtime: configuration, measured info, fork safety, clean interpreter exit."""

from __future__ import annotations

import os
import sys

import pytest
from subproc import assert_works_after_fork, run_python


def test_configure_before_start_then_error_after_start():
    proc = run_python(
        """
        import gilkit_testext as ext
        ext.configure_runtime(worker_threads=3, thread_name="probe-worker")
        info = ext.runtime_info()
        assert info["started"] is False, info
        assert info["config"]["worker_threads"] == 3
        ext.block_on_sleep(1)  # starts the runtime
        info = ext.runtime_info()
        assert info["started"] is True and info["worker_threads"] == 3, info
        try:
            ext.configure_runtime(worker_threads=1)
        except RuntimeError as e:
            assert "already running" in str(e) and "3 worker threads" in str(e), e
            print("OK")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK"


def test_configure_rejects_zero_with_value_error():
    proc = run_python(
        """
        import gilkit_testext as ext
        try:
            ext.configure_runtime(worker_threads=0)
        except ValueError as e:
            assert "worker_threads" in str(e), e
            print("OK")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK"


def test_runtime_info_is_measured():
    proc = run_python(
        """
        import time, gilkit_testext as ext
        ext.configure_runtime(worker_threads=2)
        ext.block_on_sleep(1)
        ext.spawn_attaching_tasks(4, 300, lambda: None)  # 4 sleeping tasks + 4 blocking sleepers
        time.sleep(0.1)
        info = ext.runtime_info()
        assert info["worker_threads"] == 2, info
        assert info["tasks_alive"] >= 4, info  # async tasks; blocking ones are threads
        assert info["blocking_threads"] >= 4, info
        assert info["uptime_s"] > 0.1, info
        assert info["cpu_count"] == len(__import__("os").sched_getaffinity(0)), info
        print("OK")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK"


# What a forked child must be able to do after the parent used a part of gilkit that keeps threads.
# Each case: the parent's use before the fork, then the child's check (True = works), which would
# hang forever on the parent's threads, absent in the child; the parent then checks it still works.
FORK_CASES = {
    "runtime": (
        "ext.block_on_sleep(1)",
        'ext.block_on_sleep(20) >= 20 and ext.runtime_info()["started"] and ext.runtime_info()["uptime_s"] < 5',
    ),
    # On the main thread interruptible work runs on a pooled helper, which then waits, idle.
    "interruptible-helpers": ("ext.spin_interruptible(1000); time.sleep(0.1)", "ext.spin_interruptible(1000) >= 0"),
}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
@pytest.mark.parametrize("case", FORK_CASES.values(), ids=FORK_CASES.keys())
def test_fork_gives_child_working_threads(case: tuple[str, str]) -> None:
    assert_works_after_fork(*case, timeout=30)


def test_exit_with_tasks_in_flight_is_clean():
    proc = run_python(
        """
        import gilkit_testext as ext
        ext.block_on_sleep(1)
        calls = []
        # Tasks that will try to re-attach while, or after, the interpreter exits.
        ext.spawn_attaching_tasks(16, 50, lambda: calls.append(1))
        ext.spawn_attaching_tasks(16, 1500, lambda: calls.append(1))
        print("EXITING", flush=True)
        """,
        timeout=30,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert proc.stdout.strip() == "EXITING"
    assert "panicked" not in proc.stderr and "Fatal" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("run", range(3))
def test_exit_while_tasks_are_inside_block_on_of_other_threads(run: int) -> None:
    # Daemon threads caught inside block_on (a timer, a future that never ends, a short timer that
    # fires while the runtime stops) and inside an async batch at interpreter exit: no panic text
    # ("A Tokio 1.x context was found, but it is being shutdown"), no traceback, exit code kept.
    proc = run_python(
        """
        import sys, threading, gilkit_testext as ext
        threading.Thread(target=ext.block_on_forever, daemon=True).start()
        threading.Thread(target=ext.block_on_sleep, args=(60_000,), daemon=True).start()
        for ms in range(0, 40, 4):
            threading.Thread(target=ext.block_on_sleep, args=(200 + ms,), daemon=True).start()
        threading.Thread(target=ext.batch_sleep_async, args=([60_000] * 4,), daemon=True).start()
        import time; time.sleep(0.2)
        print("EXITING", flush=True)
        sys.exit(3)
        """,
        timeout=30,
    )
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert proc.stdout.strip() == "EXITING"
    assert proc.stderr == "", proc.stderr


def test_block_on_after_exit_hook_raises_instead_of_hanging() -> None:
    # An atexit handler that runs after gilkit's hook (registered before it) gets a clear error.
    proc = run_python(
        """
        import atexit

        def late():
            try:
                ext.block_on_sleep(1)
            except RuntimeError as e:
                print("LATE", e, flush=True)

        atexit.register(late)  # before gilkit's hook, so it runs after it
        import gilkit_testext as ext
        ext.block_on_sleep(1)
        """,
        timeout=30,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert "LATE gilkit's runtime has stopped because the Python interpreter is exiting" in proc.stdout
    assert proc.stderr == "", proc.stderr
