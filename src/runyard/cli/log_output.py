"""Where the server's JSON log lines go: a buffered stream, flushed once per turn of the
event loop rather than once per line.

A run writes three lines (its request, two transitions) and each flush is a write(2) to the
log; under load many runs end in one turn, and their lines now leave in one write, after
what that turn did. A line logged off the loop (the store's thread, start-up, shutdown) is
flushed at once, as before. A line is never held longer than the turn that logged it; a
process killed outright (SIGKILL, the OOM killer) loses what its last turn logged.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from typing import Any, BinaryIO


class TurnFlushedLogger:
    """A structlog logger (`msg` and its aliases) over `stream`; one for the whole process,
    so that one write per turn serves every logger.

    It holds the lines itself, not the stream's buffer: under PYTHONUNBUFFERED (usual in
    containers, and set here) `sys.stderr.buffer` is the raw file, a write(2) per call."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lines: list[bytes] = []
        # lines come from the loop and from other threads; re-entrant, for a line logged by
        # a finaliser the collector runs while a write holds it
        self._lock = threading.RLock()
        self._torn = False  # a write failed part way: the next starts on a new line
        # the loop a write is due on; a loop that closed before its write ran is never
        # waited for: the next line on another loop (or off any) schedules or writes again
        self._due_on: asyncio.AbstractEventLoop | None = None
        atexit.register(self.flush)  # what the last turn logged, if its write never ran

    def msg(self, message: bytes) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._lines.append(message)
            if loop is None:
                self._write_out()  # no turn to wait for
            elif self._due_on is not loop:
                self._due_on = loop
                loop.call_soon(self._flush_due)

    def flush(self) -> None:
        with self._lock:
            self._write_out()

    def _flush_due(self) -> None:
        with self._lock:
            self._due_on = None
            self._write_out()

    def _write_out(self) -> None:
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        lines.append(b"")
        if self._torn:
            lines.insert(0, b"")
        data = memoryview(b"\n".join(lines))
        try:
            while data:  # a raw file may take part of it (the stream is unbuffered)
                written = self._stream.write(data)
                if written is None:  # a non-blocking stream that is full
                    raise BlockingIOError
                self._torn = True
                data = data[written:]
            self._torn = False
            self._stream.flush()
        except (OSError, ValueError):  # a full disk or a closed stream: a log line is not
            pass  # worth a failed request (structlog's own logger would have raised here)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class Handler(logging.Handler):
    """The standard library's records (uvicorn's, a traceback) through the same logger, so
    that they keep their place among the JSON lines."""

    def __init__(self, logger: TurnFlushedLogger) -> None:
        super().__init__()
        self.logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.logger.msg(self.format(record).encode("utf-8", "backslashreplace"))
        except Exception:
            self.handleError(record)


def factory(logger: TurnFlushedLogger) -> Any:
    """structlog's `logger_factory`: the same logger whatever it is asked for."""
    return lambda *_args: logger
