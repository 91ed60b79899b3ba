"""How the server's log bytes leave: never by a write that can wait on the log's reader.

stderr is often a pipe or a socket (a container runtime, systemd's journal, `| tee`), and
its reader can stop or fall behind. A blocking write(2) to it then waits until the reader
makes room, and a write made on the event loop stops the whole server: requests hang, and
`/health/live` with them. So for a pipe a second open file description of the same pipe
(through /proc) is made non-blocking, leaving stderr's own as it was for whatever else
writes there (a traceback, a warning); a socket is sent to with MSG_DONTWAIT, a per-call flag
that changes nothing shared. A regular file or a terminal is written as it is: its writes
do not wait on anybody.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from typing import BinaryIO

Write = Callable[[memoryview], int]  # the bytes taken; BlockingIOError when there is no room


class Sink:
    """Where log bytes go, and the descriptor to watch for room when a write was refused
    (None for a stream whose writes never wait)."""

    def __init__(self, write: Write, fd: int | None = None) -> None:
        self.write = write
        self.fd = fd


def _stream_write(stream: BinaryIO) -> Write:
    def write(data: memoryview) -> int:
        written = stream.write(data)
        if not written:  # a raw stream that is non-blocking and full says None
            raise BlockingIOError
        return written

    return write


def sink_for(stream: BinaryIO) -> Sink:
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError):  # not a file (a test's stream), or closed
        return Sink(_stream_write(stream))
    if stat.S_ISFIFO(mode):
        try:
            own = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # no /proc, or the reader is gone already (ENXIO)
            return Sink(_stream_write(stream))
        return Sink(lambda data: os.write(own, data), own)
    if stat.S_ISSOCK(mode):
        copy = os.dup(fd)
        try:
            sock = socket.socket(fileno=copy)
        except OSError:
            os.close(copy)
            return Sink(_stream_write(stream))
        return Sink(lambda data: sock.send(data, socket.MSG_DONTWAIT), sock.fileno())
    return Sink(_stream_write(stream))
