"""A deadline and a size cap on request headers, which uvicorn lacks (its `timeout_keep_alive`
covers only the idle time between requests and is reset by every byte): a connection whose
request head is not complete within `header_timeout_s` of its first byte (or of the
connection) is closed, so slow or partial headers cannot hold connections and descriptors.
Once a request's headers are in, the deadline is off: slow bodies are bounded by the body cap,
long responses and streams are never cut.

Nor does httptools cap a request head's size (h11 does, at 16 KiB): every header is kept as it
is parsed, before any authentication. A head whose bytes pass MAX_HEAD_BYTES while it is still
being parsed (counted from the parser's own callbacks, whatever the previous request is doing)
is answered 431 (problem JSON) and its connection closed. What a connection can hold is then
the cap and one read.

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
    # Where httptools' parser is (its callbacks: with h11 none is called, and h11 caps heads
    # itself): inside a request's head, or its body; and a head's bytes as far as counted.
    _in_head = False
    _in_body = False
    _head_bytes = 0
    _refused = False  # answered 431: nothing more is parsed
    _begun = False  # a head began during the read being parsed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # an answer's head and body leave in one send (head_with_body.py)
        super().connection_made(HeadWithBody(cast(asyncio.Transport, transport), self.loop))
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._deadline is None and self._awaiting_head():
            self._arm()
        head_before, body_before = self._in_head, self._in_body
        self._begun = False
        super().data_received(data)
        upgraded = self.transport.get_protocol() is not self  # a websocket now owns it
        if upgraded or self.cycle is not self._cycle_at_arm or self.transport.is_closing():
            self._disarm()
        if upgraded or self.transport.is_closing() or not self._in_head:
            return
        # Still inside a head: the read counts whole when it held nothing else, that is when
        # it began inside this head, or between two requests. One that began inside a body
        # counts nothing (where the head began in it is not known): the cap is then exceeded
        # by one read at most.
        if (head_before and not self._begun) or (self._begun and not body_before):
            self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse()

    def on_message_begin(self) -> None:
        self._in_head, self._in_body, self._head_bytes, self._begun = True, False, 0, True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head, self._in_body = False, True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    def _refuse(self) -> None:
        """431, then a lingering close: closing with the client's bytes unread would send a
        reset, which may destroy the answer before the client reads it. What it still sends
        is read and dropped until it closes, or for LINGER_S at most."""
        self._disarm()
        self._refused = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            self.transport.close()  # an answer is under way (a stream): no room for another
            return
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
