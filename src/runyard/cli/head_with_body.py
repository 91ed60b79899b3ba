"""An answer's head and its body in one send.

uvicorn writes an answer's status line and headers, then its body, as two `transport.write`
calls, and the event loop sends each at once: every small answer costs two system calls and
two TCP segments, and wakes a waiting client twice (first for a head without its body). The
connection's transport is wrapped so that a head waits for the write that follows it, which
in uvicorn is its body, written in the same step; the two leave together at once. A head
with no body right behind it (a stream that has not produced anything yet, a 100 Continue)
leaves at the loop's next callback. Any other write goes out as it comes.
"""

from __future__ import annotations

import asyncio
from typing import Any

HEAD = b"HTTP/1."  # how every head uvicorn writes begins (a body never comes first)


class HeadWithBody:
    """The real transport, but for a head held until the next write or the next callback."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._transport.is_closing():
            # its client is gone (uvicorn marks only the newest request of a pipeline as
            # disconnected; an older one's stream still writes): nobody to send it to
            self._head = None
            return
        if self._head is not None:
            data, self._head = self._head + bytes(data), None
        elif bytes(data[: len(HEAD)]) == HEAD:
            self._head = bytes(data)
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Send a head held now (before a close the event loop makes itself: a half-close)."""
        head, self._head = self._head, None
        if head is not None and not self._transport.is_closing():
            self._transport.write(head)

    def abort(self) -> None:
        self._head = None  # nobody to tell
        self._transport.abort()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        held = len(self._head) if self._head is not None else 0
        return int(self._transport.get_write_buffer_size()) + held

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
