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

A response may drop its connection at once through the `runyard.abort` ASGI extension (a
stream whose watcher stopped reading).

It wraps uvicorn's own HTTP protocol (httptools, or h11 where that is missing) and watches
only what both have: `cycle` (a new one per parsed request head) and the transport. A client
that stops taking an answer is cut by the guard below it (write_stall.py).
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

from runyard.api.client_gone import ABORT_EXTENSION
from runyard.cli.connection_cap import ConnectionCap, client_of
from runyard.cli.head_with_body import HeadWithBody
from runyard.cli.refusals import (
    MAX_HEAD_BYTES,
    TOO_LARGE,
    malformed,
    over_cap,
    unacceptable_head,
    unsupported_coding,
    unsupported_upgrade,
)
from runyard.cli.reset import reset, socket_unsent
from runyard.cli.write_stall import WriteStallGuard

LINGER_S = 2.0


class HeaderDeadlineProtocol(WriteStallGuard):
    header_timeout_s: float  # set on the subclass with_header_timeout makes
    cap: ConnectionCap | None = None  # the server's connections (cli/connection_cap.py)
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
    _uncounted = False  # the head began in a read that held an earlier request's end
    _open = 0  # requests made (a cycle each) and not yet answered whole, pipelined ones too
    _trailer_bytes = 0  # of the trailer fields of the body being read (never its headers)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # an answer's head and body leave in one send (head_with_body.py)
        super().connection_made(HeadWithBody(cast(asyncio.Transport, transport), self.loop))
        if self.cap is not None:
            refused = self.cap.admit(self, client_of(transport.get_extra_info("peername")))
            if refused is not None:  # answered at once, nothing of it read, and closed
                self._refused = True
                self.transport.write(over_cap(refused))
                self.transport.close()
                return
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
        self._after_read(upgraded)
        if upgraded or self.transport.is_closing() or self._refused:
            return
        if not self._in_head:
            if self._in_body and self._trailer_bytes:
                self._check_trailers()
            return
        # Still inside a head: the read counts whole when it held nothing else, that is when
        # it began inside this head, or between two requests with this head at its start.
        # One that held the end of a request before it counts nothing (where the head began
        # in it is not known): the cap is then exceeded by one read at most.
        if (head_before and not self._begun) or (
            self._begun == 1 and not head_before and not body_before
        ):
            self._head_bytes += len(data)
        elif self._begun:
            self._uncounted = True  # measured whole once it is complete (on_headers_complete)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(TOO_LARGE)

    def _after_read(self, upgraded: bool) -> None:
        if upgraded or self.cycle is not self._cycle_at_arm or self.transport.is_closing():
            self._disarm()
        if self.cap is not None and self._answering():  # (h11 calls no on_headers_complete)
            self.cap.working(self)
        if upgraded and self.cap is not None:  # its place among the connections goes along
            socket = self.transport.get_protocol()
            self.cap.hand_over(self, socket)
            socket.connection_cap = self.cap  # released at its end (ws_guard.py)

    def on_message_begin(self) -> None:
        if self._refused:
            return
        self._in_head, self._in_body, self._head_bytes = True, False, 0
        self._uncounted = False
        self._begun += 1
        super().on_message_begin()
        # a stream whose peer stopped reading drops the connection through this (api/sse.py);
        # uvicorn's close would first flush to a peer that never reads, and keep the socket
        transport = self.transport
        self.scope["extensions"] = {
            ABORT_EXTENSION: {"abort": transport.abort, "reset": lambda: reset(transport)}
        }

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head, self._in_body = False, True
        # the head is whole: measured only when this read and those before could hold more
        could_hold = self._uncounted or self._head_bytes + self._read_len > MAX_HEAD_BYTES
        if could_hold and self._head_size() > MAX_HEAD_BYTES:
            self._refuse(TOO_LARGE)  # before uvicorn makes a request of it
            return
        if (refusal := self._refusal_of_head()) is not None:
            self._refuse(refusal)
            return
        cycle, self._trailer_bytes = self.cycle, 0
        try:
            super().on_headers_complete()
        except BaseException:
            # refused before a request was made of it (a target uvicorn cannot parse, as
            # CONNECT's host:port): refused as a head is. Taken for the request being
            # answered, there was none to answer, and the connection closed in silence.
            self._in_head, self._in_body = True, False
            raise
        if self.cycle is not cycle:  # a request made (not an upgrade, which leaves us)
            self._open += 1
            if self.cap is not None:
                self.cap.working(self)

    def _refusal_of_head(self) -> bytes | None:
        """The answer to a whole head no request may be made of (another HTTP version, a
        Host missing or given twice) or whose body could not be read as it asks (a transfer
        coding other than chunked, a protocol switch other than WebSocket), or None."""
        version = self.parser.get_http_version()
        if (refusal := unacceptable_head(version, self.headers)) is not None:
            return refusal
        if (refusal := unsupported_coding(self.headers)) is not None:
            return refusal
        if self.parser.should_upgrade() and not self._should_upgrade():
            return unsupported_upgrade(self.headers)
        return None

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_body:
            # a chunked body's trailer field: uvicorn added it to the request's headers, read
            # after the body (a probe: an `Idempotency-Key` and a `Prefer: wait` sent as
            # trailers were obeyed, unseen by a proxy that reads the head). Counted, dropped.
            self._trailer_bytes += len(name) + len(value) + 4
            return
        super().on_header(name, value)

    def _check_trailers(self) -> None:
        """A chunked body's trailer fields, capped as a head is (looked at once per read, not
        per field: over by one read at most)."""
        if self._trailer_bytes > MAX_HEAD_BYTES:
            self._refuse_unfinished(TOO_LARGE)

    def _should_upgrade(self) -> bool:
        return not self._refused and bool(super()._should_upgrade())

    def _unsupported_upgrade_warning(self) -> None:
        """uvicorn's parser stopped at a request asking for a protocol other than WebSocket:
        what followed it in the read was dropped, and later reads would be parsed as new
        requests. It had no body (one with a body is refused as its head completes): it is
        answered, the upgrade ignored, and then the connection closes, nothing more read."""
        if self._refused:
            return  # refused already, as its head completed: that answer stands
        self._refused, self._in_head, self._in_body = True, False, False
        self._disarm()
        if self.cycle is not None:
            self.cycle.keep_alive = False

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        if self._trailer_bytes:  # trailers came whole within a read
            self._check_trailers()
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
        if self._refused:
            # refused already, as its head completed (a transfer coding the parser, too,
            # gives up on right after): that refusal stands. Taken for a new one, the request
            # before it, being answered, was dropped from the pipeline unanswered.
            return
        error = sys.exc_info()[1]
        self._refuse_unfinished(malformed(str(error) if error is not None else msg))

    def _refuse_unfinished(self, answer: bytes) -> None:
        """The request being parsed is refused: after the answers to those before it, or, if
        it is the one being answered (its body being read), at once; then the connection
        closes (uvicorn tells its app it is gone)."""
        if not self._in_body or self._drop_unfinished():
            self._refuse(answer)
            return
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

    def _drop_unfinished(self) -> bool:
        """The request begun and never finished (bytes refused in it, or the client's half
        went), dropped so that those before it are answered: False if it is the one being
        answered (its app waits for the rest of its body)."""
        if self._in_head:
            return True  # no request made of it yet
        queued = [entry for entry in getattr(self, "pipeline", ()) if entry[0] is self.cycle]
        if not queued:
            return False
        self.pipeline.remove(queued[0])  # its turn never comes
        queued[0][0].response_complete = True  # nor is it waited for
        self._open -= 1
        return True

    def _answering(self) -> bool:
        # self.cycle is the newest request, not always the one being answered; uvicorn's h11
        # protocol (no httptools callbacks, so no count) reads one request at a time
        cycle = self.cycle
        return self._open > 0 or (cycle is not None and not cycle.response_complete)

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
        self._open = max(0, self._open - 1)  # (h11's requests are not counted)
        super().on_response_complete()  # the next request of a pipeline starts
        if self._answering():
            return
        if self._refusal is not None:
            answer, self._refusal = self._refusal, None
            self._send_refusal(answer)
        elif self._eof:
            self.transport.close()
            self._owed_on_close()
        elif self.cap is not None and not self.transport.is_closing():
            self.cap.waiting(self)  # kept alive for the next request

    def eof_received(self) -> bool | None:
        # The client half-closed: the event loop closes the transport itself once this returns
        # False, not through the wrapper, so a head held for its body (a HEAD's) must leave now.
        self.transport.flush()
        unfinished = self._refusal is None and (self._in_head or self._in_body)
        if self._answering() and (not unfinished or self._drop_unfinished()):
            # What it sent whole is answered (or refused), then it closes; but not waited on
            # for long: a client gone altogether sends the same FIN, and one that left a wait
            # (`Prefer: wait`) or a stream must end it, and give back what it holds, soon.
            self._refused, self._in_head, self._eof = True, False, True
            self._disarm()
            self._deadline = self.loop.call_later(LINGER_S, self.transport.close)
            return True
        if self._refused:
            self.transport.close()
            return False
        return cast("bool | None", super().eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.cap is not None:
            self.cap.release(self)
        super().connection_lost(exc)

    def _awaiting_head(self) -> bool:
        cycle = self.cycle
        return cycle is None or bool(cycle.response_complete)

    def _arm(self) -> None:
        self._cycle_at_arm = self.cycle
        self._deadline = self.loop.call_later(self.header_timeout_s, self._expired)
        if self.cap is not None:
            self.cap.waiting(self)

    def close_idle(self) -> None:
        """Closed to make room for a new connection (cli/connection_cap.py): it has no
        request in progress, as when its keep-alive ends. One whose last answer the client
        has not taken whole is reset: a close would wait for it, its descriptor held."""
        self._disarm()
        if self.transport.is_closing() or self.transport.get_write_buffer_size():
            reset(self.transport)
        else:
            self.transport.close()

    def close_stalled(self) -> None:
        """Reset to make room for a new connection (cli/connection_cap.py): its client has
        taken none of its answers for a while, and a close would wait on it."""
        self._disarm()
        reset(self.transport)

    def unsent(self) -> int:
        """What its client has not taken: the transport's buffer and the socket's queue."""
        return int(self.transport.get_write_buffer_size()) + socket_unsent(self.transport)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.cap is not None:
            self.cap.stalled(self)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.cap is not None:
            self.cap.flowing(self)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.cycle is self._cycle_at_arm and not self.transport.is_closing():
            self.transport.close()


def with_header_timeout(
    header_timeout_s: float,
    stall_s: float,
    cap: ConnectionCap | None = None,
    shutdown_stall_s: float = 5.0,
) -> type[asyncio.Protocol]:
    """uvicorn's protocol class with this deadline, these cuts of a client that stopped
    reading (at shutdown the second), and this cap on connections (uvicorn makes one per
    connection)."""
    return type(
        "HeaderDeadlineProtocol", (HeaderDeadlineProtocol,),
        {"header_timeout_s": header_timeout_s, "stall_s": stall_s, "cap": cap,
         "shutdown_stall_s": shutdown_stall_s},
    )  # fmt: skip
