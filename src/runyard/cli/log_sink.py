"""How the server's log bytes leave: never by a write that can wait on the log's reader.

stderr is often a pipe or a socket (a container runtime, systemd's journal, `| tee`), and
its reader can stop or fall behind. A blocking write(2) to it then waits until the reader
makes room, and a write made on the event loop stops the whole server: requests hang, and
`/health/live` with them. So a pipe or a socket is written with RWF_NOWAIT (pwritev2), a
flag of the call, not of the descriptor: stderr stays blocking for whatever else writes to
it (the supervisor's launch, a fatal error at exit), and the lines follow fd 2 wherever it
is pointed. A kernel that does not take the flag on this file (EOPNOTSUPP) has a pipe
written through a second, non-blocking open of it (/proc/self/fd) and a socket with
MSG_DONTWAIT; only another user's pipe on such a kernel is written blocking, as before.
A regular file or a terminal is written as it is: its writes do not wait on anybody.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from typing import BinaryIO

UNSUPPORTED = (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)


class Sink:
    """`write(data)` takes what it can of `data` and says how much, or raises
    BlockingIOError when there is no room; `fd` is what to watch for room (None for a
    stream whose writes never wait)."""

    def __init__(self, stream: BinaryIO, fd: int | None = None, nowait: bool = False) -> None:
        self._stream = stream
        self.fd = fd
        self._nowait = nowait
        self._socket: socket.socket | None = None

    def write(self, data: memoryview) -> int:
        if self._nowait and self.fd is not None:
            try:
                written: int | None = os.pwritev(self.fd, [data], -1, os.RWF_NOWAIT)
            except OSError as exc:
                if exc.errno not in UNSUPPORTED:
                    raise
                self._fall_back()  # this kernel does not take the flag here
                return self.write(data)
        elif self._socket is not None:
            written = self._socket.send(data, socket.MSG_DONTWAIT)
        elif self.fd is not None:
            written = os.write(self.fd, data)
        else:
            written = self._stream.write(data)
        if not written:  # a raw stream that is non-blocking and full says None
            raise BlockingIOError
        return written

    def flush(self) -> None:
        if self.fd is None:
            self._stream.flush()

    def _fall_back(self) -> None:
        """Without RWF_NOWAIT: a pipe through a second open of it, non-blocking; a socket
        with MSG_DONTWAIT. Failing that (another user's pipe: EACCES), blocking as before."""
        self._nowait, fd, self.fd = False, self.fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
                self.fd = os.open(f"/proc/self/fd/{fd}", flags)
                return
            blocking, copy = os.get_blocking(fd), os.dup(fd)
            try:
                sock = socket.socket(fileno=copy)
            except OSError:
                os.close(copy)
                raise
            # a default timeout (socket.setdefaulttimeout) made it non-blocking for every
            # user of the descriptor, and would make send wait: undone
            sock.settimeout(None)
            os.set_blocking(fd, blocking)
            self._socket, self.fd = sock, fd


def sink_for(stream: BinaryIO, *, nowait: bool = True) -> Sink:
    """`nowait=False`: as on a kernel that refuses RWF_NOWAIT (the fallback from the start)."""
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError):  # not a file (a test's stream), or closed
        return Sink(stream)
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return Sink(stream)
    sink = Sink(stream, fd, nowait=True)
    if not nowait or not hasattr(os, "RWF_NOWAIT"):
        sink._fall_back()
    return sink
