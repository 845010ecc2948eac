import sys
import threading
import time

import starter


def test_count_primes():
    assert starter.count_primes(100) == 25


def test_wait_ms():
    assert starter.wait_ms(5) == 5


def test_count_primes_releases_the_gil():
    # A second thread counts while `count_primes` runs. The switch interval is raised so that
    # Python never takes the GIL away from a running thread: the counter can only move if
    # `count_primes` releases the GIL itself.
    ticks = 0
    stop = False

    def tick():
        nonlocal ticks
        while not stop:
            ticks += 1
            time.sleep(0.0005)

    old = sys.getswitchinterval()
    sys.setswitchinterval(100)
    thread = threading.Thread(target=tick)
    try:
        thread.start()
        time.sleep(0.01)
        before = ticks
        starter.count_primes(300_000)
        during = ticks - before
    finally:
        stop = True
        thread.join()
        sys.setswitchinterval(old)
    assert during > 0, "the other thread never ran: count_primes held the GIL"
    stats = starter.callsite_stats()
    site = next(s for name, s in stats.items() if name.endswith("count_primes"))
    assert site["released"] >= 1
