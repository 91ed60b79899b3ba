"""A deadline and a size cap on request headers, which uvicorn lacks (its `timeout_keep_alive`
covers only the idle time between requests and is reset by every byte): a connection whose
request head is not complete within `header_timeout_s` of its first byte (or of the
connection) is closed, so slow or partial headers cannot hold connections and descriptors.
Once a request's headers are in, the deadline is off: slow bodies are bounded by the body cap,
long responses and streams are never cut.

Nor does httptools cap a request head's size (h11 does, at 16 KiB): every header is kept in a
list as it is parsed, before any authentication, so a head that is not complete within
MAX_HEAD_BYTES of its start is answered 431 (problem JSON) and its connection closed. What a
connection can hold is then the cap and one read.

It wraps uvicorn's own HTTP protocol (httptools, or h11 where that is missing) and watches
only what both have: `cycle` (a new one per parsed request head) and the transport.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from runyard.cli.head_with_body import HeadWithBody

_BASE: Any = AutoHTTPProtocol
MAX_HEAD_BYTES = 64 * 1024  # a request line and its headers; nginx's default is 32 KiB
LINGER_S = 2.0


def _too_large() -> bytes:
    body = orjson.dumps({
        "type": "urn:runyard:problem:head-too-large",
        "title": "Request header fields too large",
        "status": 431,
        "detail": f"the request line and headers are over the limit of {MAX_HEAD_BYTES} bytes",
        "limit": MAX_HEAD_BYTES,
    })  # fmt: skip
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


TOO_LARGE = _too_large()


class HeaderDeadlineProtocol(_BASE):  # type: ignore[misc]
    header_timeout_s: float  # set on the subclass with_header_timeout makes
    _deadline: asyncio.TimerHandle | None = None
    _cycle_at_arm: object = None
    _head_bytes = 0  # received since the head now awaited began
    _refused = False  # answered 431: nothing more is parsed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # an answer's head and body leave in one send (head_with_body.py)
        super().connection_made(HeadWithBody(cast(asyncio.Transport, transport), self.loop))
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._deadline is None and self._awaiting_head():
            self._arm()
        super().data_received(data)
        upgraded = self.transport.get_protocol() is not self  # a websocket now owns it
        if upgraded or self.cycle is not self._cycle_at_arm or self.transport.is_closing():
            self._disarm()
            return
        # still no whole head: what came in belongs to it (a body comes only after a head)
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse()

    def _refuse(self) -> None:
        """431, then a lingering close: closing with the client's bytes unread would send a
        reset, which may destroy the answer before the client reads it. What it still sends
        is read and dropped until it closes, or for LINGER_S at most."""
        self._disarm()
        self._refused = True
        self.transport.write(TOO_LARGE)
        self.transport.write_eof()
        self._deadline = self.loop.call_later(LINGER_S, self.transport.close)

    def eof_received(self) -> bool | None:
        # The client half-closed: the event loop closes the transport itself once this returns,
        # not through the wrapper, so a head held for its body (a HEAD's) must leave now.
        self.transport.flush()
        if self._refused:
            self.transport.close()
            return False
        return cast("bool | None", super().eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _awaiting_head(self) -> bool:
        cycle = self.cycle
        return cycle is None or bool(cycle.response_complete)

    def _arm(self) -> None:
        self._cycle_at_arm = self.cycle
        self._head_bytes = 0
        self._deadline = self.loop.call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.cycle is self._cycle_at_arm and not self.transport.is_closing():
            self.transport.close()


def with_header_timeout(header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's protocol class with this deadline (uvicorn makes one per connection)."""
    return type(
        "HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": header_timeout_s}
    )
