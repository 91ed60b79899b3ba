"""Where the server's JSON log lines go: a buffered stream, flushed once per turn of the
event loop rather than once per line, and never by a write that waits on the log's reader.

A run writes three lines (its request, two transitions) and each flush is a write(2) to the
log; under load many runs end in one turn, and their lines now leave in one write, after
what that turn did. A line logged off the loop (the store's thread, start-up, shutdown) is
written at once, as before. A process killed outright (SIGKILL, the OOM killer) loses what
its last turn logged; one that ends by the signal it was told to stop with (uvicorn raises
SIGTERM again once shut down, and its default action skips atexit) is flushed first
(cli/serve.py calls flush_at_exit).

A reader that stops (a pipe nobody drains) holds lines back instead of the server: what it
refuses is held, up to MAX_HELD_BYTES, and sent as it makes room (the loop says when); lines
past that are dropped and counted, and a `log_lines_dropped` line says how many, with the
first line the reader takes again (log_sink.py). Off the loop nobody is told of room: the
next line tries again.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import select
import threading
import time
from typing import Any, BinaryIO

import orjson

from runyard.cli.log_render import log_json, stamp
from runyard.cli.log_sink import sink_for

MAX_HELD_BYTES = 1 << 20  # what a stalled reader can make the server hold
NEWLINE = ord("\n")
EXIT_WAIT_S = 1.0  # at exit, how long a stalled reader may hold back what is still held


class TurnFlushedLogger:
    """A structlog logger (`msg` and its aliases) over `stream`; one for the whole process,
    so that one write per turn serves every logger.

    It holds the lines itself, not the stream's buffer: under PYTHONUNBUFFERED (usual in
    containers, and set here) `sys.stderr.buffer` is the raw file, a write(2) per call."""

    def __init__(self, stream: BinaryIO, *, nowait: bool = True) -> None:
        self._sink = sink_for(stream, nowait=nowait)  # nowait=False: log_sink's fallback
        self._lines: list[bytes] = []
        self._held = 0  # bytes in _lines and _unsent
        self._unsent = bytearray()  # what the reader has not taken yet
        self._dropped = 0  # lines dropped while the reader was that far behind
        # lines come from the loop and from other threads; re-entrant, for a line logged by
        # a finaliser the collector runs while a write holds it (that line joins the write)
        self._lock = threading.RLock()
        self._writing = False
        self._line_open = False  # the last byte that left ended no line
        self._torn = False  # what was held is lost mid-line: the next starts on a new line
        # the loop a write is due on; a loop that closed before its write ran is never
        # waited for: the next line on another loop (or off any) schedules or writes again
        self._due_on: asyncio.AbstractEventLoop | None = None
        self._watching: asyncio.AbstractEventLoop | None = None  # for room in a full pipe
        atexit.register(self.flush_at_exit)  # what the last turn logged, if never written

    def msg(self, message: bytes) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            if self._held > MAX_HELD_BYTES:
                self._dropped += 1  # the reader is that far behind: not this line too
            else:
                if self._dropped:  # what the reader missed, said as soon as it can be
                    self._keep(_dropped_line(self._dropped))
                    self._dropped = 0
                self._keep(message)
            if loop is None:
                self._write_out()  # no turn to wait for (a write never waits)
            elif self._due_on is not loop:
                self._due_on = loop
                loop.call_soon(self._flush_due, loop)

    def _keep(self, line: bytes) -> None:
        self._lines.append(line)
        self._held += len(line) + 1

    def flush(self) -> None:
        with self._lock:
            self._write_out()

    def _flush_due(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._due_on = None
            self._write_out(loop)

    def _write_out(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Send what is held, as far as the reader takes it; `loop` (the running one, if
        any) is told to say when there is room for the rest."""
        if self._writing:
            return  # a line logged during the write under way: that write takes it along
        self._writing = True
        try:
            self._send()
        except BlockingIOError:
            self._wait_for_room(loop)
        except (OSError, ValueError):  # a full disk or a closed stream: a log line is not
            # worth a failed request (structlog's own logger would have raised here)
            self._torn = self._line_open
            del self._unsent[:]
            self._held = sum(len(line) + 1 for line in self._lines)  # logged during the write
        finally:
            self._writing = False

    def _send(self) -> None:
        while True:
            if not self._lines and not self._unsent:
                if not self._dropped:
                    break
                self._keep(_dropped_line(self._dropped))  # caught up: say what it missed
                self._dropped = 0
            if self._lines:
                lines, self._lines = self._lines, []
                lines.append(b"")
                if self._torn:
                    lines.insert(0, b"")
                    self._torn = False
                self._unsent += b"\n".join(lines)
            with memoryview(self._unsent) as view:  # released before the resize below
                written = self._sink.write(view)
            self._line_open = self._unsent[written - 1] != NEWLINE
            del self._unsent[:written]
            self._held -= written
        self._held = 0
        self._sink.flush()

    def _wait_for_room(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Have the loop say when a full pipe or socket has room again. Off the loop (a
        line from a thread, start-up) the next turn's write, or the next line, tries again."""
        watching = self._watching
        if watching is not None and (watching.is_closed() or not watching.is_running()):
            self._watching = None  # its loop ended (or stopped) while the reader was behind
        fd = self._sink.fd
        if fd is None or self._watching is not None or loop is None:
            return
        blocking = os.get_blocking(fd)
        loop.add_writer(fd, self._room, loop, fd)
        self._watching = loop
        if blocking:  # uvloop (libuv) made it non-blocking for every user of stderr: undone
            os.set_blocking(fd, True)

    def _room(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        with self._lock:
            self._watching = None
            loop.remove_writer(fd)
            self._write_out(loop)  # watches again if the reader took only part of it

    def flush_at_exit(self) -> None:
        """What is still held, waiting a little for a reader that is behind (no loop now, or
        none that will turn again)."""
        deadline = time.monotonic() + EXIT_WAIT_S
        with self._lock:
            self._write_out()
            while self._unsent and self._sink.fd is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                with contextlib.suppress(OSError, ValueError):
                    room = select.poll()
                    room.register(self._sink.fd, select.POLLOUT)
                    room.poll(left * 1000)
                self._write_out()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class Handler(logging.Handler):
    """The standard library's records (uvicorn's, psycopg's pool, a traceback) through the
    same logger, so that they keep their place among the JSON lines, each a JSON line itself
    (they were written as bare text: every line a log shipper could not parse)."""

    def __init__(self, logger: TurnFlushedLogger) -> None:
        super().__init__()
        self.logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(_emitting, "now", False):
            return  # a record made while one is written (a warning the logging raised)
        _emitting.now = True
        try:
            self.logger.msg(json_record(record))
        except Exception:
            self.handleError(record)
        finally:
            _emitting.now = False


_emitting = threading.local()


def json_record(record: logging.LogRecord) -> bytes:
    """A standard library record as the JSON log's line: the message as `event`, its logger,
    its level, the time, and a traceback if it has one (as structlog's lines carry them)."""
    line: dict[str, Any] = {"event": record.getMessage(), "logger": record.name}
    if record.exc_info:
        line["exception"] = logging.Formatter().formatException(record.exc_info)
    line["level"] = record.levelname.lower()
    line["timestamp"] = stamp()
    return log_json(line)


def factory(logger: TurnFlushedLogger) -> Any:
    """structlog's `logger_factory`: the same logger whatever it is asked for."""
    return lambda *_args: logger


def _dropped_line(count: int) -> bytes:
    """The line that says how many lines a stalled reader made the server drop."""
    event = {"count": count, "event": "log_lines_dropped", "level": "warning", "timestamp": stamp()}
    return orjson.dumps(event)
