"""The supervisor's timer heap waits in a select any timer can be waited for with."""

from __future__ import annotations

import os
import selectors
import time

from runyard.execution.timers import Timers


def test_a_timer_past_epolls_longest_wait_is_waited_for_in_turns() -> None:
    """A job's timeout_s of 35 days (over epoll's 2^31 - 1 ms) made the supervisor's select
    raise OverflowError: the supervisor died, and every running program with it."""
    timers = Timers()
    timers.add(3e6, "timeout", "run.1")
    read, write = os.pipe()
    try:
        os.write(write, b"x")  # ready: the select returns at once, whatever it may wait
        with selectors.DefaultSelector() as sel:
            sel.register(read, selectors.EVENT_READ)
            assert len(sel.select(timers.wait_s(time.monotonic()))) == 1
    finally:
        os.close(read)
        os.close(write)
    assert list(timers.due(time.monotonic())) == []  # not due before its time
    assert list(timers.due(time.monotonic() + 3e6 + 1)) == [("timeout", "run.1")]
