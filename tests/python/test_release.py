"""The GIL-release functions: detach, detach_interruptible(_owned), Interruptible, block_on."""

from __future__ import annotations

import threading

import gilkit_testext as ext
import pytest
from gil_probe import assert_holds_gil, assert_releases_gil
from sigint import CHILD_PRELUDE, interrupt_after_ready

WORK_US = 200_000  # long enough for the OS to schedule the ticker thread on a busy machine


def test_detach_releases_the_gil():
    assert assert_releases_gil(lambda: ext.spin_released(WORK_US)) > 0


def test_same_work_with_the_gil_held_blocks_other_threads():
    # The control: proves the probe can fail.
    assert assert_holds_gil(lambda: ext.spin_held(WORK_US)) > 0


def test_detach_interruptible_releases_the_gil():
    assert assert_releases_gil(lambda: ext.spin_interruptible(WORK_US)) > 0


def test_detach_interruptible_off_the_main_thread_runs_inline_and_releases():
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(assert_releases_gil(lambda: ext.spin_interruptible(WORK_US))))
    t.start()
    t.join()
    assert result and result[0] > 0


def test_block_on_releases_the_gil():
    assert assert_releases_gil(lambda: ext.block_on_spin(WORK_US)) > 0


def test_block_on_drives_timers():
    slept_ms = ext.block_on_sleep(30)
    assert slept_ms >= 30


def test_block_on_inside_another_runtime_does_not_panic():
    # GraphBit #287: "Cannot start a runtime from within a runtime" must not happen.
    assert ext.block_on_inside_other_runtime() == 7


def test_panic_in_interruptible_work_reaches_python():
    with pytest.raises(BaseException, match="boom from the work") as info:
        ext.panic_interruptible()
    assert type(info.value).__name__ == "PanicException"


def test_poll_hook_sees_every_step_and_is_called_with_the_gil():
    seen: list[int] = []
    done = ext.run_with_progress(10, 5, seen.append)
    assert done == 10
    assert seen, "the hook never ran"
    assert seen == sorted(seen), "progress went backwards"
    assert seen[-1] == 10, "the final call must report the finished total"


def test_poll_hook_error_cancels_the_work_and_is_raised():
    calls = []

    def hook(done: int) -> None:
        calls.append(done)
        if len(calls) == 2:
            raise ValueError("stop now")

    with pytest.raises(ValueError, match="stop now"):
        ext.run_with_progress(1_000, 5, hook)
    assert len(calls) == 2, "the hook must not run again after it failed"


@pytest.mark.parametrize(
    "call",
    [
        "ext.spin_interruptible(10**12)",  # endless CPU work that checks its token
        "ext.block_on_forever()",  # a future that never completes
        "ext.sleep_uncooperative(3600.0, 200)",  # work that never checks: abandoned after 200 ms
    ],
)
def test_ctrl_c_interrupts_long_calls(call):
    delay, output = interrupt_after_ready(CHILD_PRELUDE.format(call=call))
    assert "CAUGHT KeyboardInterrupt" in output and "RETURNED" not in output
    # No bound on `delay`: none of the calls ends by itself within the helper's 30 s guard, so
    # CAUGHT is the proof; the latency (<= 100 ms) is measured in benches/release.
