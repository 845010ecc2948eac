"""GilSemaphore and GilBatcher driven from Python: answers matched to requests under load, exceptions
kept intact, the batcher's failure isolation, statistics as dicts, and the lock-order inversion."""

from __future__ import annotations

import subprocess
import time

import gilkit_testext as ext
import pytest
from subproc import run_python
from gil_probe import assert_holds_gil, assert_releases_gil


class ModelError(Exception):
    pass


def test_thousand_concurrent_calls_each_get_their_own_answer():
    callables = [lambda i=i: ("answer", i, i * i) for i in range(1000)]
    results, errors, stats = ext.semaphore_call_all(callables, permits=2)
    assert errors == [None] * 1000
    assert results == [("answer", i, i * i) for i in range(1000)]
    assert stats["total_acquired"] == 1000
    assert stats["python_calls"] == 1000
    assert (stats["in_use"], stats["waiting"], stats["rejected_busy"]) == (0, 0, 0)
    assert stats["permits"] == 2 and stats["max_queue"] is None
    wait = stats["wait"]
    assert wait["count"] == 1000
    assert 0 <= wait["p50_s"] <= wait["p99_s"] <= wait["max_s"]
    assert stats["python_time_s"] > 0


def test_an_exception_comes_back_as_the_very_object_raised_with_its_traceback():
    raised = ModelError("model failed on item 3")

    def failing_model():
        raise raised

    callables = [lambda: 1, failing_model, lambda: 3]
    results, errors, stats = ext.semaphore_call_all(callables)
    assert results == [1, None, 3]
    assert errors[0] is None and errors[2] is None
    assert errors[1] is raised
    frames = [tb.tb_frame.f_code.co_name for tb in _walk(errors[1].__traceback__)]
    assert "failing_model" in frames, frames
    assert stats["in_use"] == 0, "the permit came back after the exception"


def _walk(tb):
    while tb is not None:
        yield tb
        tb = tb.tb_next


def test_a_bounded_queue_refuses_with_busy_and_never_otherwise():
    # One permit, no room to wait: whoever finds the permit taken is refused at once.
    callables = [lambda i=i: (time.sleep(0.01), i)[1] for i in range(50)]
    results, errors, stats = ext.semaphore_call_all(callables, permits=1, max_queue=0)
    busy = [e for e in errors if e is not None]
    assert busy, "50 simultaneous calls on one permit with no queue: some must be refused"
    for e in busy:
        assert isinstance(e, RuntimeError) and "busy" in str(e), e
    assert stats["rejected_busy"] == len(busy)
    assert all(r == i for i, r in enumerate(results) if r is not None)
    # The same load without a bound: everyone waits, nobody fails.
    results, errors, stats = ext.semaphore_call_all(callables, permits=1)
    assert errors == [None] * 50 and results == list(range(50))
    assert stats["rejected_busy"] == 0


def test_batcher_answers_a_thousand_requests_in_order_with_few_gil_acquisitions():
    batches = []

    def model(xs):
        batches.append(list(xs))
        return [x * 3 for x in xs]

    results, errors, stats = ext.batcher_call_all(model, list(range(1000)), max_batch=64)
    assert errors == [None] * 1000
    assert results == [x * 3 for x in range(1000)]
    assert stats["batches"] == len(batches) < 1000
    assert max(len(b) for b in batches) <= 64
    assert stats["batch_sizes"] == {n: sum(len(b) == n for b in batches) for n in {len(b) for b in batches}}
    assert sum(n * c for n, c in stats["batch_sizes"].items()) == 1000
    assert stats["succeeded"] == 1000 and stats["failed"] == 0
    assert stats["mean_batch_size"] == pytest.approx(1000 / len(batches))


def test_batcher_exception_fails_exactly_the_requests_of_its_batch():
    raised_for_batch = []

    def model(xs):
        if any(x % 97 == 0 for x in xs):
            exc = ModelError(f"poisoned batch {xs}")
            raised_for_batch.append((list(xs), exc))
            raise exc
        raised_for_batch.append((list(xs), None))
        return [-x for x in xs]

    items = list(range(1, 501))
    results, errors, stats = ext.batcher_call_all(model, items, max_batch=16)
    failed = 0
    for batch, exc in raised_for_batch:
        for x in batch:
            i = x - 1
            if exc is None:
                assert results[i] == -x and errors[i] is None
            else:
                # Every request of the failed batch holds that batch's exception object.
                assert results[i] is None and errors[i] is exc
                failed += 1
    assert failed > 0
    assert stats["failed"] == failed and stats["succeeded"] == 500 - failed


def test_batcher_with_a_wrong_length_result_fails_loudly_instead_of_misrouting():
    results, errors, _ = ext.batcher_call_all(lambda xs: xs[:-1], [1, 2, 3], max_batch=8, max_wait_ms=50)
    assert results == [None] * 3
    assert all(isinstance(e, RuntimeError) and "one result per request" in str(e) for e in errors)


def test_lock_taken_with_lock_py_attached_survives_the_inversion_1000_times():
    assert ext.lock_inversion_rounds(1000) == 1000


def test_a_naive_lock_while_holding_the_gil_hangs():
    # The naive version really deadlocks, so it runs in a subprocess that the timeout kills.
    with pytest.raises(subprocess.TimeoutExpired):
        run_python(
            """
            import gilkit_testext as ext
            ext.lock_inversion_rounds(1, naive=True)
            print("completed")
            """,
            timeout=5,
        )
    # The control: the same subprocess with gilkit's lock completes well within the timeout.
    proc = run_python(
        """
        import gilkit_testext as ext
        print(ext.lock_inversion_rounds(1))
        """,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"


def test_waiting_for_a_permit_from_python_releases_the_gil():
    waited = assert_releases_gil(lambda: ext.wait_for_held_permit(100))
    assert waited >= 0.09


def test_the_naive_wait_for_a_permit_holds_the_gil():
    # The control that makes the test above meaningful: the same wait without detaching.
    assert_holds_gil(lambda: ext.wait_for_held_permit(100, naive=True))
