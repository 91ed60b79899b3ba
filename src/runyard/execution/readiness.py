"""Waiting, blocking and bounded, for one descriptor to have something to read.

poll(2), not select(2): select takes no descriptor past FD_SETSIZE (1023 — Python raises
ValueError), and a server serving a thousand connections holds descriptors past it: the pipe
it made to hear its new supervisor say "ready" was one of them, so it could not start its
supervisor again."""

from __future__ import annotations

import select


def readable(fd: int, timeout_s: float) -> bool:
    """Whether `fd` has data, or its end (EOF, a hang-up), within `timeout_s`."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0.0, timeout_s) * 1000))
