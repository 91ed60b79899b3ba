"""Where the server's JSON log lines go: a buffered stream, flushed once per turn of the
event loop rather than once per line, and never by a write that waits on the log's reader.

A run writes three lines (its request, two transitions) and each flush is a write(2) to the
log; under load many runs end in one turn, and their lines now leave in one write, after
what that turn did. A line logged off the loop (the store's thread, start-up, shutdown) is
written at once, as before. A process killed outright (SIGKILL, the OOM killer) loses what
its last turn logged.

A reader that stops (a pipe nobody drains) holds lines back instead of the server: what it
refuses is held, up to MAX_HELD_BYTES, and sent as it makes room (the loop says when); lines
past that are dropped and counted, and a `log_lines_dropped` line says how many once the
reader has caught up (log_sink.py).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import select
import threading
import time
from datetime import UTC, datetime
from typing import Any, BinaryIO

import orjson

from runyard.cli.log_sink import sink_for

MAX_HELD_BYTES = 1 << 20  # what a stalled reader can make the server hold
NEWLINE = ord("\n")
EXIT_WAIT_S = 1.0  # at exit, how long a stalled reader may hold back what is still held


class TurnFlushedLogger:
    """A structlog logger (`msg` and its aliases) over `stream`; one for the whole process,
    so that one write per turn serves every logger.

    It holds the lines itself, not the stream's buffer: under PYTHONUNBUFFERED (usual in
    containers, and set here) `sys.stderr.buffer` is the raw file, a write(2) per call."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._sink = sink_for(stream)
        self._lines: list[bytes] = []
        self._held = 0  # bytes in _lines and _unsent
        self._unsent = bytearray()  # what the reader has not taken yet
        self._dropped = 0  # lines dropped while the reader was that far behind
        # lines come from the loop and from other threads; re-entrant, for a line logged by
        # a finaliser the collector runs while a write holds it
        self._lock = threading.RLock()
        self._line_open = False  # the last byte that left ended no line
        self._torn = False  # what was held is lost mid-line: the next starts on a new line
        # the loop a write is due on; a loop that closed before its write ran is never
        # waited for: the next line on another loop (or off any) schedules or writes again
        self._due_on: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the last one seen, to watch on
        self._watching: asyncio.AbstractEventLoop | None = None  # for room in a full pipe
        atexit.register(self._flush_at_exit)  # what the last turn logged, if never written

    def msg(self, message: bytes) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            if self._held > MAX_HELD_BYTES:
                self._dropped += 1  # the reader is that far behind: not this line too
                return
            self._lines.append(message)
            self._held += len(message) + 1
            if loop is None:
                self._write_out()  # no turn to wait for
            elif self._due_on is not loop:
                self._due_on = self._loop = loop
                loop.call_soon(self._flush_due)

    def flush(self) -> None:
        with self._lock:
            self._write_out()

    def _flush_due(self) -> None:
        with self._lock:
            self._due_on = None
            self._write_out()

    def _write_out(self) -> None:
        if self._lines:
            self._lines.append(b"")
            if self._torn:
                self._lines.insert(0, b"")
                self._torn = False
            self._unsent += b"\n".join(self._lines)
            self._lines = []
        try:
            while self._unsent:
                with memoryview(self._unsent) as view:  # released before the resize below
                    written = self._sink.write(view)
                self._line_open = self._unsent[written - 1] != NEWLINE
                del self._unsent[:written]
                self._held = len(self._unsent)
            if self._sink.fd is None:
                self._stream.flush()
        except BlockingIOError:
            self._wait_for_room()
            return
        except (OSError, ValueError):  # a full disk or a closed stream: a log line is not
            # worth a failed request (structlog's own logger would have raised here)
            self._torn = self._line_open
            del self._unsent[:]
            self._held = 0
            return
        if self._dropped:  # the reader caught up: say what it missed
            self._lines.append(_dropped_line(self._dropped))
            self._held, self._dropped = len(self._lines[0]) + 1, 0
            self._write_out()

    def _wait_for_room(self) -> None:
        """Have the loop say when a full pipe or socket has room again."""
        if self._watching is not None and self._watching.is_closed():
            self._watching = None  # its loop ended while the reader was behind
        loop = self._loop
        if self._sink.fd is None or self._watching is not None or loop is None:
            return  # the next turn's write tries again
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._watch()
            return
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            loop.call_soon_threadsafe(self._watch)

    def _watch(self) -> None:
        loop, fd = self._loop, self._sink.fd
        with self._lock:
            if self._watching is None and self._unsent and loop is not None and fd is not None:
                loop.add_writer(fd, self._room)
                self._watching = loop

    def _room(self) -> None:
        with self._lock:
            self._write_out()
            if not self._unsent and self._watching is not None and self._sink.fd is not None:
                self._watching.remove_writer(self._sink.fd)
                self._watching = None

    def _flush_at_exit(self) -> None:
        """What is still held, waiting a little for a reader that is behind (no loop now)."""
        deadline = time.monotonic() + EXIT_WAIT_S
        with self._lock:
            self._write_out()
            while self._unsent and self._sink.fd is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                with contextlib.suppress(OSError, ValueError):
                    select.select([], [self._sink.fd], [], left)
                self._write_out()

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


def _dropped_line(count: int) -> bytes:
    """The line that says how many lines a stalled reader made the server drop."""
    at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    event = {"count": count, "event": "log_lines_dropped", "level": "warning", "timestamp": at}
    return orjson.dumps(event)
