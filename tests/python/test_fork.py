"""Fork: every part of gilkit that owns threads works in a child made by os.fork() after the parent
used it (the parent's threads do not exist in the child; gilkit notices by the fork generation and
starts afresh), and still works in the parent afterwards. Each child is bounded by a timeout, so a
regression fails instead of hanging."""

from __future__ import annotations

import os

import pytest
from subproc import assert_works_after_fork

# Each case: the parent's use before the fork, then an expression that is True when the part works
# (in the child, then again in the parent).
CASES = {
    # The Executor's workers are long-running jobs on gilkit's pool; in the child there are none,
    # and an idle-worker token left from the parent must not stop a new one from starting.
    "executor": (
        "ex = ext.Executor(max_workers=2); assert ex.submit(ext.native_sleep, 1, 5).result(10) == 5",
        "ex.submit(ext.native_sleep, 1, 7).result(10) == 7 and ex.submit(lambda: 8).result(10) == 8",
    ),
    # detach_interruptible_owned runs its work detached on the pool.
    "interruptible-owned": (
        "ext.sleep_uncooperative(0.001, 0); time.sleep(0.05)",
        "ext.sleep_uncooperative(0.001, 0) is None",
    ),
    # CPU batches run their extra workers on the pool (borrowed work, scoped join).
    "cpu-batch": (
        "ext.batch_square(list(range(64)), workers=2)",
        "list(ext.batch_square(list(range(64)), workers=2)[0]) == [x * x for x in range(64)]",
    ),
}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_forked_child_gets_its_own_threads(case: tuple[str, str]) -> None:
    assert_works_after_fork(*case, timeout=60)
