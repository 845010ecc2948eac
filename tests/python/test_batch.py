"""gilkit.batch from Python: ordered results with failures in place, GIL release, progress callbacks,
deadlines, Ctrl-C, and the concurrent.futures-compatible Executor."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import io
import os
import random
import threading
import time

import gilkit_testext as ext
import pytest
from gil_probe import assert_releases_gil
from hypothesis import given, settings
from hypothesis import strategies as st
from sigint import interrupt_after_ready
from tqdm import tqdm


def wait_until(condition, guard: float = 60.0) -> None:
    """Waits for `condition()` to hold; fails only if it never does (a hang guard, not a timing
    assertion)."""
    give_up = time.monotonic() + guard
    while not condition():
        assert time.monotonic() < give_up, f"{condition} never held"
        time.sleep(0.001)


PanicException = type(ext.batch_square([1], panic_at={0})[0][0])


# --- batches from a #[pyfunction] -------------------------------------------------------------


def test_results_keep_input_order_with_failures_in_place():
    rng = random.Random(7)
    n = 5_000
    fail_at = set(rng.sample(range(n), 40))
    panic_at = set(rng.sample(sorted(set(range(n)) - fail_at), 10))
    items = [rng.randrange(-1000, 1000) for _ in range(n)]
    results, stats = ext.batch_square(items, workers=3, fail_at=fail_at, panic_at=panic_at)
    assert len(results) == n
    for i, (x, r) in enumerate(zip(items, results)):
        if i in panic_at:
            assert isinstance(r, PanicException) and f"deliberate panic at {i}" in str(r)
        elif i in fail_at:
            assert isinstance(r, ValueError) and str(r) == f"bad item {x} at {i}"
        else:
            assert r == x * x
    assert (stats["succeeded"], stats["failed"], stats["panicked"]) == (n - 50, 40, 10)
    assert stats["stopped"] is None and stats["total"] == n
    assert stats["latency"]["count"] == n and stats["throughput"] > 0


@settings(max_examples=60, deadline=None)
@given(
    items=st.lists(st.integers(-(2**31), 2**31), max_size=300),
    workers=st.integers(1, 4),
    data=st.data(),
)
def test_any_batch_lines_up_with_its_input(items, workers, data):
    positions = st.sets(st.integers(0, max(len(items) - 1, 0)), max_size=len(items))
    fail_at = data.draw(positions) if items else set()
    panic_at = (data.draw(positions) - fail_at) if items else set()
    results, stats = ext.batch_square(items, workers=workers, fail_at=fail_at, panic_at=panic_at)
    assert len(results) == len(items) == stats["total"]
    for i, (x, r) in enumerate(zip(items, results)):
        if i in panic_at:
            assert isinstance(r, PanicException)
        elif i in fail_at:
            assert isinstance(r, ValueError) and str(r) == f"bad item {x} at {i}"
        else:
            assert r == x * x
    assert stats["failed"] == len(fail_at) and stats["panicked"] == len(panic_at)


def test_cpu_batch_releases_the_gil():
    results, _ = assert_releases_gil(lambda: ext.batch_square(list(range(100)), sleep_ms=2, workers=2))
    assert results == [x * x for x in range(100)]


def test_async_batch_releases_the_gil():
    results, _ = assert_releases_gil(lambda: ext.batch_sleep_async([20] * 10, max_concurrency=5))
    assert results == [20] * 10


def test_progress_callback_adds_up_and_is_not_called_per_item():
    calls: list[int] = []
    started = time.monotonic()
    results, stats = ext.batch_square(list(range(400)), sleep_ms=2, workers=2, progress=calls.append)
    elapsed = time.monotonic() - started
    assert sum(calls) == 400 == stats["succeeded"]
    assert all(n > 0 for n in calls)
    # At most one call per 100 ms, plus the final one.
    assert len(calls) <= elapsed / 0.1 + 2, (len(calls), elapsed)
    assert len(calls) >= 2, "progress was only reported at the end"


def test_progress_drives_a_tqdm_bar():
    with tqdm(total=300, file=io.StringIO(), mininterval=0) as bar:
        ext.batch_sleep_async([3] * 300, max_concurrency=8, progress=bar.update)
        assert bar.n == 300


def test_an_exception_from_the_progress_callback_stops_the_batch_and_keeps_results():
    def fail(_n: int) -> None:
        raise OSError("the progress bar broke")

    with pytest.raises(OSError, match="the progress bar broke") as caught:
        ext.batch_square(list(range(2_000)), sleep_ms=2, workers=2, progress=fail)
    partial = caught.value.partial_results
    stats = caught.value.batch_stats
    assert len(partial) == 2_000 and stats["stopped"] == "cancelled"
    done = [r for r in partial if not isinstance(r, BaseException)]
    assert 0 < len(done) < 2_000
    assert all(isinstance(r, cf.CancelledError) for r in partial if isinstance(r, BaseException))
    assert all(partial[i] == i * i for i in range(2_000) if not isinstance(partial[i], BaseException))


def test_the_deadline_keeps_finished_results():
    # A full run would take 1 s.
    results, stats = ext.batch_square(list(range(400)), sleep_ms=5, workers=2, timeout=0.3)
    assert stats["stopped"] == "deadline"
    finished = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
    assert 0 < len(finished) < 400
    assert all(results[i] == i * i for i in finished)
    assert all(isinstance(r, TimeoutError) for r in results if isinstance(r, BaseException))
    assert stats["timed_out"] == 400 - len(finished)


def test_the_item_timeout_cancels_slow_futures_only():
    # The timeout is far above the fast items (a runtime stalled for a second could not time them
    # out) and far below the slow ones.
    results, stats = ext.batch_sleep_async([1, 60_000, 2, 60_000, 3], max_concurrency=5, item_timeout=1.0)
    assert results[0::2] == [1, 2, 3]
    assert all(isinstance(r, TimeoutError) for r in results[1::2])
    assert stats["stopped"] is None and stats["timed_out"] == 2


def test_bad_options_raise_value_error():
    with pytest.raises(ValueError, match="workers must be at least 1"):
        ext.batch_square([1], workers=0)
    with pytest.raises(ValueError, match="max_concurrency must be at least 1"):
        ext.batch_sleep_async([1], max_concurrency=0)


CTRL_C_CPU = """
import concurrent.futures as cf, gilkit_testext as ext
print("READY", flush=True)
try:
    ext.batch_square(list(range(100_000)), sleep_ms=5, workers=2)
except KeyboardInterrupt as e:
    r = e.partial_results
    done = sum(not isinstance(x, BaseException) for x in r)
    cancelled = sum(isinstance(x, cf.CancelledError) for x in r)
    print("CAUGHT KeyboardInterrupt", len(r), done, cancelled, e.batch_stats["stopped"], flush=True)
"""

CTRL_C_ASYNC = """
import concurrent.futures as cf, gilkit_testext as ext
print("READY", flush=True)
try:
    ext.batch_sleep_async([20] * 100 + [60_000] * 100, max_concurrency=10)
except KeyboardInterrupt as e:
    r = e.partial_results
    done = sum(not isinstance(x, BaseException) for x in r)
    cancelled = sum(isinstance(x, cf.CancelledError) for x in r)
    print("CAUGHT KeyboardInterrupt", len(r), done, cancelled, e.batch_stats["stopped"], flush=True)
"""


@pytest.mark.parametrize("code", [CTRL_C_CPU, CTRL_C_ASYNC], ids=["cpu", "async"])
def test_ctrl_c_stops_the_batch_and_raises_with_what_finished(code):
    delay, output = interrupt_after_ready(code, settle=0.5)
    line = next(l for l in output.splitlines() if l.startswith("CAUGHT"))
    _, _, total, done, cancelled, stopped = line.split()
    assert int(total) == int(done) + int(cancelled) and stopped == "cancelled"
    assert int(done) > 0 and int(cancelled) > 0
    # No bound on `delay`: the cancelled items prove the batch stopped early; the latency (~100 ms)
    # is measured in benches/batch.


# --- the Executor ------------------------------------------------------------------------------


def test_submit_returns_a_real_future_and_as_completed_works():
    with ext.Executor(max_workers=4) as ex:
        futures = [ex.submit(ext.native_sleep, 10 * (i % 3), i) for i in range(30)]
        assert all(isinstance(f, cf.Future) for f in futures)
        seen = sorted(f.result() for f in cf.as_completed(futures, timeout=30))
        assert seen == list(range(30))
        assert [f.result() for f in futures] == list(range(30))


def test_map_keeps_order_and_propagates_errors():
    with ext.Executor(max_workers=3) as ex:
        assert list(ex.map(ext.native_double, range(1_000))) == [2 * x for x in range(1_000)]
        assert list(ex.map(lambda a, b: a + b, [1, 2], [10, 20])) == [11, 22]
        results = ex.map(ext.native_fail, ["boom"])
        with pytest.raises(ValueError, match="boom"):
            next(results)


def test_failures_panics_and_bad_arguments_land_on_their_futures():
    with ext.Executor(max_workers=2) as ex:
        assert isinstance(ex.submit(ext.native_fail, "nope").exception(timeout=10), ValueError)
        panicked = ex.submit(ext.native_panic, "kaboom").exception(timeout=10)
        assert isinstance(panicked, PanicException) and "kaboom" in str(panicked)
        bad = ex.submit(ext.native_double, "not a number").exception(timeout=10)
        assert isinstance(bad, TypeError) and "native_double" in str(bad)
        # The pool survives all of that.
        assert ex.submit(ext.native_double, 21).result(timeout=10) == 42


def test_python_callables_run_like_thread_pool_executor():
    with ext.Executor(max_workers=2) as ex:
        assert ex.submit(pow, 2, 10).result() == 1024
        assert ex.submit(sorted, [3, 1, 2], reverse=True).result() == [3, 2, 1]
        with pytest.raises(ZeroDivisionError):
            ex.submit(lambda: 1 / 0).result()


def test_native_work_releases_the_gil():
    with ext.Executor(max_workers=1) as ex:
        assert assert_releases_gil(lambda: ex.submit(ext.native_spin, 200_000).result()) > 0


def test_native_fn_called_directly_releases_the_gil_and_checks_arguments():
    assert assert_releases_gil(lambda: ext.native_spin(200_000)) > 0
    assert ext.native_double(4) == 8
    with pytest.raises(TypeError, match="native_double"):
        ext.native_double("x")
    with pytest.raises(TypeError, match="positional arguments only"):
        ext.native_double(x=1)
    assert ext.native_double.__name__ == "native_double"


def test_shutdown_cancels_pending_futures_and_refuses_new_work():
    ex = ext.Executor(max_workers=1)
    first = ex.submit(ext.native_sleep, 200, 1)
    wait_until(first.running)  # the only thread has started it
    pending = [ex.submit(ext.native_sleep, 200, i) for i in range(10)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert first.result() == 1
    assert all(f.cancelled() for f in pending)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(ext.native_double, 1)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(ext.native_double, "bad arguments are not even looked at")


def test_tasks_submitted_back_to_back_run_at_the_same_time():
    # Regression: two quick submissions must not both count on one idle thread. Each task waits
    # at a barrier for the other: only tasks running at the same time get through (run one after
    # the other, the first one's wait times out and breaks the barrier).
    with ext.Executor(max_workers=2) as ex:
        for _ in range(3):
            barrier = threading.Barrier(2, timeout=60)
            futures = [ex.submit(barrier.wait) for _ in range(2)]
            assert sorted(f.result() for f in futures) == [0, 1], "the second task waited for the first"


def test_a_future_cancelled_before_it_runs_is_skipped():
    with ext.Executor(max_workers=1) as ex:
        # The only thread is held until the queued future has been cancelled.
        release = threading.Event()
        blocker = ex.submit(release.wait, 60)
        queued = ex.submit(ext.native_sleep, 100, 1)
        assert queued.cancel()
        release.set()
        assert blocker.result() is True
        assert queued.cancelled()


def test_asyncio_wrap_future_and_run_in_executor_work():
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        with ext.Executor(max_workers=4) as ex:
            wrapped = [asyncio.wrap_future(ex.submit(ext.native_sleep, 20, i)) for i in range(8)]
            via_loop = loop.run_in_executor(ex, ext.native_double, 50)
            return [*await asyncio.gather(*wrapped), await via_loop]

    assert asyncio.run(main()) == [*range(8), 100]


def test_tqdm_over_as_completed():
    with ext.Executor(max_workers=4) as ex:
        futures = [ex.submit(ext.native_double, i) for i in range(200)]
        total = sum(f.result() for f in tqdm(cf.as_completed(futures), total=200, disable=True))
    assert total == 2 * sum(range(200))


def _thread_cpu_seconds(prefix: str) -> dict[str, float]:
    """CPU time (user + system) of this process's threads whose name starts with ``prefix``."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        if name.startswith(prefix):
            out[tid] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return out


def test_idle_executor_threads_use_no_cpu():
    with ext.Executor(max_workers=2) as ex:
        # Two blockers running at once make the pool start both of its threads.
        assert [f.result() for f in [ex.submit(ext.native_sleep, 100, i) for i in range(2)]] == [0, 1]
        time.sleep(0.1)  # let the threads finish settling and park
        before = _thread_cpu_seconds("gilkit-executo")
        assert len(before) == 2, before
        time.sleep(0.5)
        after = _thread_cpu_seconds("gilkit-executo")
    spent = sum(after[t] - before[t] for t in before)
    # A spinning thread would burn ~0.5 s per thread; parked threads burn nothing (a few clock ticks
    # of slack for accounting granularity).
    assert spent <= 0.03, f"idle executor threads used {spent:.3f} s of CPU in 0.5 s"


def test_the_interpreter_exits_cleanly_with_executor_work_in_flight(python_subprocess):
    done = python_subprocess(
        """
        import gilkit_testext as ext
        ex = ext.Executor(max_workers=2)
        futures = [ex.submit(ext.native_sleep, 50, i) for i in range(40)]
        futures += [ex.submit(sorted, [3, 1, 2]) for _ in range(40)]
        print("leaving", flush=True)
        """,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "leaving" in done.stdout and "Fatal" not in done.stderr


def test_the_executor_is_safe_to_use_from_many_threads():
    with ext.Executor(max_workers=4) as ex:
        results: list[list[int]] = []

        def client(k: int) -> None:
            results.append([f.result() for f in [ex.submit(ext.native_double, k * 100 + i) for i in range(100)]])

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(x for r in results for x in r) == sorted(2 * x for x in range(800))
