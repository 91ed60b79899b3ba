"""A deadline and a size cap on request headers, which uvicorn lacks (its `timeout_keep_alive`
covers only the idle time between requests and is reset by every byte): a connection whose
request head is not complete within `header_timeout_s` of its first byte (or of the
connection) is closed, so slow or partial headers cannot hold connections and descriptors.
Once a request's headers are in, the deadline is off: slow bodies are bounded by the body cap,
long responses and streams are never cut.

Nor does httptools cap a request head's size (h11 does, at 16 KiB): every header is kept as it
is parsed, before any authentication. A head over MAX_HEAD_BYTES is answered 431 (problem
JSON) and its connection closed: while it is still being parsed, from the reads that lay
inside it; once it is whole, from what the parser kept of it. What a connection can hold is
then the cap and one read.

What uvicorn would answer itself to a request it cannot parse (a broken Content-Length, bad
chunk framing) is problem JSON naming the parser's reason, not a line of plain text. Such a
refusal, and a 431, waits for the answers of the requests before it on the connection: they
were accepted, and their clients hear of them first (what comes meanwhile is read and
dropped). A client that half-closes after its request still gets the answer if it comes
within LINGER_S, unless that answer had begun (a stream); otherwise the connection closes,
as it did (and a `Prefer: wait` it left ends).

It wraps uvicorn's own HTTP protocol (httptools, or h11 where that is missing) and watches
only what both have: `cycle` (a new one per parsed request head) and the transport.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, cast

import orjson
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from runyard.cli.head_with_body import HeadWithBody

_BASE: Any = AutoHTTPProtocol
MAX_HEAD_BYTES = 64 * 1024  # a request line and its headers; nginx's default is 32 KiB
LINGER_S = 2.0


def _answer(status: str, problem: dict[str, Any]) -> bytes:
    body = orjson.dumps(problem)
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


TOO_LARGE = _answer("431 Request Header Fields Too Large", {
    "type": "urn:runyard:problem:head-too-large",
    "title": "Request header fields too large",
    "status": 431,
    "detail": f"the request line and headers are over the limit of {MAX_HEAD_BYTES} bytes",
    "limit": MAX_HEAD_BYTES,
})  # fmt: skip


def _malformed(reason: str) -> bytes:
    """The answer to bytes the HTTP parser refused, with its reason (httptools names what it
    found: "Duplicate Content-Length", "Invalid character in chunk size", ...)."""
    return _answer("400 Bad Request", {
        "type": "urn:runyard:problem:malformed-http",
        "title": "Malformed HTTP request",
        "status": 400,
        "detail": f"the request is not valid HTTP/1.1: {reason[:200]}",
    })  # fmt: skip


class HeaderDeadlineProtocol(_BASE):  # type: ignore[misc]
    header_timeout_s: float  # set on the subclass with_header_timeout makes
    _deadline: asyncio.TimerHandle | None = None
    _cycle_at_arm: object = None
    # Where httptools' parser is (its callbacks: with h11 none is called, and h11 caps heads
    # itself): inside a request's head, or its body; and a head's bytes as far as counted.
    _in_head = False
    _in_body = False
    _head_bytes = 0  # of the reads that lay wholly inside the head being parsed
    _read_len = 0  # of the read being parsed
    _refused = False  # refused (431, 400): nothing more is parsed, nor any request answered
    _refusal: bytes | None = None  # to be sent once the answers before it are out
    _eof = False  # the client half-closed after a whole request: close once it is answered
    _begun = 0  # heads begun during the read being parsed

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
        self._begun, self._read_len = 0, len(data)
        super().data_received(data)
        upgraded = self.transport.get_protocol() is not self  # a websocket now owns it
        if upgraded or self.cycle is not self._cycle_at_arm or self.transport.is_closing():
            self._disarm()
        if upgraded or self.transport.is_closing() or not self._in_head or self._refused:
            return
        # Still inside a head: the read counts whole when it held nothing else, that is when
        # it began inside this head, or between two requests with this head at its start.
        # One that held the end of a request before it counts nothing (where the head began
        # in it is not known): the cap is then exceeded by one read at most.
        if (head_before and not self._begun) or (
            self._begun == 1 and not head_before and not body_before
        ):
            self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(TOO_LARGE)

    def on_message_begin(self) -> None:
        if self._refused:
            return
        self._in_head, self._in_body, self._head_bytes = True, False, 0
        self._begun += 1
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head, self._in_body = False, True
        # the head is whole: measured only when this read and those before could hold more
        if self._head_bytes + self._read_len > MAX_HEAD_BYTES and self._head_size() > (
            MAX_HEAD_BYTES
        ):
            self._refuse(TOO_LARGE)  # before uvicorn makes a request of it
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._in_body = False
        super().on_message_complete()

    def _head_size(self) -> int:
        """The head just parsed, in bytes, from what uvicorn kept of it (give or take the
        request line's method and version)."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this in its `except` of the parser's error: that error is the reason
        error = sys.exc_info()[1]
        answer = _malformed(str(error) if error is not None else msg)
        if not self._in_body:
            self._refuse(answer)  # after the answers to the requests before it
            return
        # The body being read is the broken one: its request ends here, answered if its
        # answer has not begun, and the connection closes (uvicorn tells its app it is gone).
        self._disarm()
        self._refused = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            self.transport.write(answer)
        self.transport.close()

    def _refuse(self, answer: bytes) -> None:
        """Nothing more is parsed; `answer` is sent once every request accepted before it on
        this connection has been answered (until then what comes is read and dropped)."""
        self._disarm()
        self._refused, self._in_head = True, False
        if self._answering():
            self._refusal = answer
            return
        self._send_refusal(answer)

    def _answering(self) -> bool:
        cycle = self.cycle  # uvicorn's h11 protocol has no pipeline: it reads one at a time
        pipelined = getattr(self, "pipeline", ())
        return bool(pipelined) or (cycle is not None and not cycle.response_complete)

    def _send_refusal(self, answer: bytes) -> None:
        """Then a lingering close: closing with the client's bytes unread would send a reset,
        which may destroy the answer before the client reads it. What it still sends is read
        and dropped until it closes, or for LINGER_S at most."""
        if self.transport.is_closing():
            return
        self.transport.write(answer)
        if self._eof:  # the client has sent all it will: nothing to linger for
            self.transport.close()
            return
        self.transport.write_eof()
        self._deadline = self.loop.call_later(LINGER_S, self.transport.close)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # the next request of a pipeline starts
        if self._answering():
            return
        if self._refusal is not None:
            answer, self._refusal = self._refusal, None
            self._send_refusal(answer)
        elif self._eof:
            self.transport.close()

    def eof_received(self) -> bool | None:
        # The client half-closed: the event loop closes the transport itself once this returns
        # False, not through the wrapper, so a head held for its body (a HEAD's) must leave now.
        self.transport.flush()
        cycle = self.cycle
        whole = self._refusal is not None or (not self._in_head and not self._in_body)
        if whole and self._answering() and cycle is not None and not cycle.response_started:
            # What it sent is answered (or refused), then it closes; but not waited on for
            # long: a client gone altogether sends the same FIN, and one that left a wait
            # (`Prefer: wait`) must end it, and give back what it holds, soon.
            self._eof = True
            self._deadline = self.loop.call_later(LINGER_S, self.transport.close)
            return True
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
