"""gilkit::asyncio: Rust futures as asyncio awaitables, and Python awaitables awaited from Rust.

Every scenario runs on the default event loop and on uvloop. Process-level cases (interpreter exit,
a loop closed with work pending, fork, Ctrl-C) run in a child interpreter and check its exit code and
that it printed nothing on stderr. Nothing here depends on how fast the machine is: where the test
waits for the Rust side to let go of cancelled work, it waits for a condition (with a generous
deadline that only a hang reaches), never for a duration.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import sys
import textwrap
import weakref

import gilkit_testext as ext
import pytest
import uvloop
from sigint import interrupt_after_ready
from subproc import run_python

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def run(request):
    """Runs a coroutine to completion on a fresh loop of the parametrised kind, then closes it."""
    factory = LOOPS[request.param]

    def run(coro):
        loop = factory()
        try:
            return loop.run_until_complete(coro)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    return run


async def wait_until_no_live_tasks(deadline_s: float = 60.0) -> None:
    """Lets the loop run until every Rust future is gone (a hang, not slowness, reaches the deadline)."""
    loop = asyncio.get_running_loop()
    stop = loop.time() + deadline_s
    while ext.asyncio_live_tasks() and loop.time() < stop:
        await asyncio.sleep(0.001)
    assert ext.asyncio_live_tasks() == 0, f"{ext.asyncio_live_tasks()} Rust futures still alive"


def test_results_errors_and_panics_reach_the_awaiting_coroutine(run):
    async def main():
        assert await ext.asyncio_ready(5) == 5
        assert await asyncio.gather(*(ext.asyncio_sleep(i % 3, i) for i in range(50))) == list(range(50))
        with pytest.raises(ValueError, match="bad input"):
            await ext.asyncio_error("bad input")
        with pytest.raises(BaseException, match="a Rust future panicked: kaboom") as info:
            await ext.asyncio_panic("kaboom")
        assert type(info.value).__name__ == "PanicException"
        await wait_until_no_live_tasks()

    run(main())


def test_awaitable_is_an_asyncio_future_of_the_running_loop(run):
    async def main():
        fut = ext.asyncio_sleep(1, 3)
        assert isinstance(fut, asyncio.Future)
        assert fut.get_loop() is asyncio.get_running_loop()
        assert await asyncio.wait_for(fut, timeout=60) == 3

    run(main())


def test_calling_without_a_running_loop_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no running asyncio event loop"):
        ext.asyncio_ready(1)


def test_the_loop_keeps_running_while_the_rust_future_works(run):
    """The future runs on a runtime thread: the loop thread is free (it would not tick otherwise)."""

    async def main():
        ticks = 0
        work = asyncio.ensure_future(ext.asyncio_spin(200_000))
        while not work.done():
            ticks += 1
            await asyncio.sleep(0)
        assert await work > 0
        assert ticks > 1, "the event loop was blocked while the Rust future ran"

    run(main())


def test_the_future_runs_on_the_runtime_and_its_output_is_converted_on_the_loop_thread(run):
    """The runtime thread only queues the Rust output; the GIL work happens on the loop thread."""

    async def main():
        results = await asyncio.gather(*(ext.asyncio_where(i % 3) for i in range(100)))
        assert {ran for ran, _ in results} == {False}, "a future ran on the loop thread"
        assert {converted for _, converted in results} == {True}, "an output was converted elsewhere"

    run(main())


def test_panic_prints_nothing_and_keeps_the_exit_code():
    proc = run_python(
        """
        import asyncio, gilkit_testext as ext
        async def main():
            try:
                await ext.asyncio_panic("secret panic text")
            except BaseException as e:
                print(type(e).__name__)
        asyncio.run(main())
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "PanicException"
    assert proc.stderr == ""


def test_cancelling_the_awaitable_drops_the_rust_future(run):
    async def main():
        tasks = [asyncio.ensure_future(ext.asyncio_forever()) for _ in range(100)]
        await asyncio.sleep(0)
        assert ext.asyncio_live_tasks() == 100
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        await wait_until_no_live_tasks()

    run(main())


def test_future_garbage_collected_before_completion_cancels_the_rust_side_10000_rounds(run):
    async def main():
        last = None
        for _ in range(10_000):
            fut = ext.asyncio_forever()
            last = weakref.ref(fut)
            del fut
        gc.collect()
        assert last() is None, "the awaitable was kept alive by gilkit"
        await wait_until_no_live_tasks()
        # The loop side forgot them too: new awaitables still work and nothing is left behind.
        assert await ext.asyncio_ready(1) == 1
        await wait_until_no_live_tasks()

    run(main())


def test_cancel_storm_half_cancelled_the_other_half_correct_and_aligned(run):
    async def main():
        n = 10_000
        tasks = [asyncio.ensure_future(ext.asyncio_sleep(i % 5, i)) for i in range(n)]
        await asyncio.sleep(0)
        for t in tasks[::2]:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, r in enumerate(results):
            if i % 2 == 0:
                # A cancel may come after the result was delivered: then the value is still right.
                assert isinstance(r, asyncio.CancelledError) or r == i, (i, r)
            else:
                assert r == i, (i, r)
        assert sum(isinstance(r, asyncio.CancelledError) for r in results) > 0
        await wait_until_no_live_tasks()

    run(main())


def test_contextvars_of_the_caller_are_seen_by_python_callbacks(run):
    var = contextvars.ContextVar("var", default="unset")

    async def main():
        async def callback():
            return 40 if var.get() == "caller" else 0

        var.set("caller")
        assert await ext.asyncio_call(callback, 2) == 42
        var.set("other")
        assert await ext.asyncio_call(callback, 2) == 2

    run(main())


def test_python_exception_in_awaited_callback_reaches_the_caller(run):
    async def main():
        async def callback():
            raise KeyError("from python")

        with pytest.raises(KeyError, match="from python"):
            await ext.asyncio_call(callback, 0)

    run(main())


def test_dropping_the_rust_side_cancels_the_python_task(run):
    async def main():
        # A future the Rust side gives up on after 1 ms (a coroutine might not even have started
        # by then, and a coroutine cancelled before its first step never sees the cancellation).
        gate = asyncio.get_running_loop().create_future()
        assert await ext.asyncio_call_with_timeout(lambda: gate, 1) is None
        loop = asyncio.get_running_loop()
        stop = loop.time() + 60
        while not gate.cancelled() and loop.time() < stop:
            await asyncio.sleep(0.001)
        assert gate.cancelled()
        await wait_until_no_live_tasks()

    run(main())


def test_cancelling_the_outer_awaitable_cancels_the_python_task_it_awaits(run):
    async def main():
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def slow():
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return 1

        outer = asyncio.ensure_future(ext.asyncio_call(slow, 0))
        await asyncio.wait_for(started.wait(), timeout=60)
        outer.cancel()
        await asyncio.wait_for(cancelled.wait(), timeout=60)
        await wait_until_no_live_tasks()

    run(main())


def test_a_cancelled_python_task_raises_cancelled_error_on_the_rust_side(run):
    async def main():
        async def cancels_itself():
            asyncio.current_task().cancel()
            await asyncio.sleep(0)
            return 1

        with pytest.raises(asyncio.CancelledError):
            await ext.asyncio_call(cancels_itself, 0)

    run(main())


def test_into_future_on_the_loop_thread(run):
    async def main():
        async def seven():
            await asyncio.sleep(0)
            return 7

        assert await ext.asyncio_await_here(seven()) == 7

    run(main())


def test_nogil_awaitable_async_fn(run):
    async def main():
        assert await asyncio.gather(*(ext.nogil_async_sleep(1, i) for i in range(20))) == list(range(20))
        assert await ext.nogil_async_parse(" 12 ") == 12
        with pytest.raises(ValueError, match="not an integer"):
            await ext.nogil_async_parse("twelve")

    run(main())


@pytest.mark.parametrize("loop_kind", sorted(LOOPS))
def test_loop_closed_with_pending_awaitables_is_quiet(loop_kind):
    proc = run_python(
        f"""
        import asyncio, time, uvloop, gilkit_testext as ext
        factory = {{"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}}["{loop_kind}"]
        loop = factory()
        async def start():
            # Sleepers still running at close, and ready results arriving while the loop closes.
            return [ext.asyncio_sleep(i % 50, i) for i in range(500)] + [ext.asyncio_ready(i) for i in range(500)]
        futs = loop.run_until_complete(start())
        # Cancelled just before the close (pyo3-async-runtimes #90): their done callbacks never run.
        for f in futs[::3]:
            f.cancel()
        loop.close()
        deadline = time.monotonic() + 60
        while ext.asyncio_live_tasks() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ext.asyncio_live_tasks() == 0, ext.asyncio_live_tasks()
        # Results delivered before the close are right; the others stay pending, quietly.
        assert all(f.cancelled() or f.result() == i % 500 for i, f in enumerate(futs) if f.done())
        # A new loop works afterwards.
        async def again():
            return await asyncio.wait_for(ext.asyncio_sleep(1, 5), 60)
        assert asyncio.run(again()) == 5
        print("OK")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK"
    assert proc.stderr == ""


EXIT_CASES = {
    # asyncio.run returns with sleepers pending: the loop closes, then the interpreter exits.
    "run-returns": """
        async def main():
            futs = [ext.asyncio_sleep(10_000, i) for i in range(200)]
            await asyncio.sleep(0)
        asyncio.run(main())
    """,
    # Results arriving while the interpreter finalises.
    "results-during-exit": """
        async def main():
            global futs
            futs = [ext.asyncio_sleep(i % 20, i) for i in range(2000)]
        asyncio.run(main())
    """,
    # sys.exit from inside the loop, awaitables in flight.
    "sys-exit-in-loop": """
        async def main():
            futs = [ext.asyncio_sleep(10_000, i) for i in range(200)] + [ext.asyncio_ready(1) for _ in range(200)]
            sys.exit(0)
        asyncio.run(main())
    """,
    # The program's own exit code is kept.
    "sys-exit-3-in-loop": """
        async def main():
            futs = [ext.asyncio_sleep(i % 20, i) for i in range(500)]
            await asyncio.sleep(0.005)
            sys.exit(3)
        asyncio.run(main())
    """,
    # A daemon thread's loop is still running, with work in flight, when the main thread exits.
    "daemon-thread-loop": """
        import threading
        ready = threading.Event()
        def serve():
            async def main():
                futs = [ext.asyncio_sleep(i % 30, i) for i in range(1000)]
                ready.set()
                await asyncio.gather(*futs, ext.asyncio_forever())
            asyncio.run(main())
        threading.Thread(target=serve, daemon=True).start()
        ready.wait()
    """,
}


@pytest.mark.parametrize("case", sorted(EXIT_CASES))
def test_interpreter_exit_with_awaitables_in_flight(case):
    code = "import asyncio, sys, gilkit_testext as ext\n" + textwrap.dedent(EXIT_CASES[case])
    proc = run_python(code, timeout=120)
    assert proc.returncode == (3 if case == "sys-exit-3-in-loop" else 0), proc.stderr
    assert proc.stderr == ""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("loop_kind", sorted(LOOPS))
def test_fork_then_await_in_the_child(loop_kind):
    proc = run_python(
        f"""
        import asyncio, os, threading, time, uvloop, gilkit_testext as ext
        factory = {{"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}}["{loop_kind}"]
        def run(coro):
            loop = factory()
            try:
                return loop.run_until_complete(coro)
            finally:
                loop.close()
        async def use():
            return await asyncio.gather(ext.asyncio_sleep(1, 1), ext.asyncio_ready(2))
        async def call():
            return await asyncio.wait_for(ext.asyncio_call(lambda: asyncio.sleep(0, 40), 2), 60)
        assert run(use()) == [1, 2]
        # The parent has a loop in another thread with work in flight when it forks.
        in_flight = threading.Event()
        def serve():
            async def main():
                futs = [ext.asyncio_forever() for _ in range(10)]
                in_flight.set()
                await asyncio.gather(*futs)
            run(main())
        threading.Thread(target=serve, daemon=True).start()
        in_flight.wait()
        assert ext.asyncio_live_tasks() == 10
        # Forking with threads running is the case under test: CPython 3.12+ warns about it.
        import warnings
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        pid = os.fork()
        if pid == 0:
            ok = ext.asyncio_live_tasks() == 0  # the parent's tasks are forgotten
            ok = ok and run(use()) == [1, 2]
            ok = ok and run(call()) == 42
            deadline = time.monotonic() + 60
            while ext.asyncio_live_tasks() and time.monotonic() < deadline:
                time.sleep(0.01)
            ok = ok and ext.asyncio_live_tasks() == 0
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        # The parent still works, and its in-flight work is still there.
        assert run(use()) == [1, 2]
        assert ext.asyncio_live_tasks() == 10
        print("OK")
        """,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK"
    assert proc.stderr == ""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("loop_kind", sorted(LOOPS))
def test_ctrl_c_while_awaiting_cancels_the_rust_future(loop_kind):
    code = f"""
        import asyncio, time, uvloop, gilkit_testext as ext
        async def main():
            futs = [ext.asyncio_forever() for _ in range(100)]
            print("READY", flush=True)
            await asyncio.gather(*futs)
        try:
            if "{loop_kind}" == "uvloop":
                uvloop.run(main())
            else:
                asyncio.run(main())
            print("RETURNED", flush=True)
        except KeyboardInterrupt:
            deadline = time.monotonic() + 60
            while ext.asyncio_live_tasks() and time.monotonic() < deadline:
                time.sleep(0.01)
            print("CAUGHT KeyboardInterrupt live=%d" % ext.asyncio_live_tasks(), flush=True)
    """
    _, output = interrupt_after_ready(code)
    assert "CAUGHT KeyboardInterrupt live=0" in output, output
