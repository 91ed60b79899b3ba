"""A byte range of an attempt's log, to be sent as it is read: the whole range was read into
memory per request (up to 4 MiB), and 400 readers that stalled held 2 GB of the server.

What a range is called is decided first, reading it in pieces: UTF-8 text when it is, a range
cut inside a character stopping before it (the next range begins with it), bytes otherwise;
then it is sent piece by piece from the descriptor held, so a request holds one piece."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from runyard.errors import ConflictError, raise_if_servers_fault
from runyard.regular_files import open_regular

PIECE = 64 * 1024  # read and sent at a time: what one request holds


@dataclass
class LogRange:
    """[start, end) of a log of `size` bytes, open as `fd` (None: nothing to send). The
    caller sends it and closes `fd` (`close`)."""

    fd: int | None
    start: int
    end: int
    size: int
    text: bool

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


def open_range(path: Path, offset: int, limit: int) -> LogRange:
    """Blocking. The range of at most `limit` bytes from `offset` (a log not written yet is
    an empty one; one its program made something else of is a 409 saying so)."""
    try:
        fd, size = open_regular(path)
    except FileNotFoundError:
        return LogRange(None, offset, offset, 0, True)
    except OSError as exc:
        raise replaced(exc) from None

    try:
        start = min(offset, size)
        end = min(start + limit, size)
        text_end = _text_end(fd, start, end)
    except BaseException:
        os.close(fd)
        raise
    if text_end is not None:
        end = text_end
    return LogRange(fd, start, end, size, text_end is not None)


def replaced(exc: OSError) -> ConflictError:
    """The answer to a log that is there but is no plain file (a link, a FIFO, a directory:
    its program put it in the log's place). It read as an empty log, which a client cannot
    tell from a program that printed nothing (a probe). The server's own fault (no
    descriptor left, the disk failing) is raised as such."""
    raise_if_servers_fault(exc, "the log")
    why = exc.strerror or str(exc)
    return ConflictError(
        f"the attempt's log is not a plain file ({why}): its program put something else in "
        "its place, and nothing of it is served"
    )


def log_replaced(path: Path) -> ConflictError | None:
    """Blocking. `replaced`'s answer if the log at `path` is there and is no plain file."""
    try:
        fd, _ = open_regular(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return replaced(exc)
    os.close(fd)
    return None


def _text_end(fd: int, start: int, end: int) -> int | None:
    """Where [start, end) ends as UTF-8 text (`streams.chunks.utf8_text_end`, read in
    pieces): `end` when it is text throughout; the start of a character cut short at `end`;
    None when it is not text, or is only that cut character."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    at = start
    while at < end:
        piece = os.pread(fd, min(PIECE, end - at), at)
        if not piece:  # shorter than it was (never, for an append-only log): up to here
            end = at
            break
        try:
            decoder.decode(piece)
        except UnicodeDecodeError:
            return None
        at += len(piece)
    pending = len(decoder.getstate()[0])  # the bytes of a character not finished
    if pending and end - pending == start:
        return None
    return end - pending


def read_piece(log: LogRange, at: int) -> bytes:
    """Blocking: the next piece of the range from `at` (empty at its end)."""
    if log.fd is None or at >= log.end:
        return b""
    with contextlib.suppress(OSError):
        return os.pread(log.fd, min(PIECE, log.end - at), at)
    return b""


def read_all(log: LogRange) -> bytes:
    """Blocking: the whole range (for what reads a bounded one)."""
    pieces, at = [], log.start
    while piece := read_piece(log, at):
        pieces.append(piece)
        at += len(piece)
    return b"".join(pieces)


def close_opened(done: asyncio.Future[LogRange]) -> None:
    """A done-callback: close the range a cancelled request opened after all."""
    if not done.cancelled() and done.exception() is None:
        done.result().close()
