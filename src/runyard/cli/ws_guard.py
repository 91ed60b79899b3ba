"""Each WebSocket connection: uvicorn's websockets-sansio protocol, with the bounds it lacks.

Probed as an attacker would (uvicorn 0.54, websockets 17), one client could hold memory or a
socket without bound, or fill the log:
- a handshake the parser refuses (a request line over 8 KiB, more than 128 headers) was
  built as a 414 or 431 and never written: the socket was held, unanswered and untimed;
- a pong is written for every ping whatever the peer has not read: a client that pings and
  never reads grew the server by 120 MB a million pings;
- a message is bounded by its payload alone: empty or one-byte frames grew one message
  without bound (43 bytes a frame; five million empty ones took the loop 22 s);
- invalid UTF-8 in a text message logged a traceback;
- a close waits for the write buffer to drain, which a peer that does not read never lets
  happen: its socket, task and stream were held for good (keepalive's own close included).

wsproto, uvicorn's other protocol, was tried and not kept: it answers a protocol error with no
close frame, inflates a compressed message without a cap, and its per-frame parsing held the
event loop for seconds (health checks late, the lease lapsing).
"""

from __future__ import annotations

import asyncio
import http
from typing import Any, cast

import structlog
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from runyard.cli.connection_cap import ConnectionCap
from runyard.cli.refusals import problem_answer
from runyard.cli.reset import reset

log = structlog.get_logger(__name__)

MAX_UNREAD = 1 << 20  # bytes of the server's frames the peer has not taken: more, it is failed
MAX_FRAMES = 64  # frames in one message (runyard reads no client message but a close)
CLOSE_GRACE_S = 5.0  # a close whose last bytes the peer has not taken by then is cut


class _ClosingTransport:
    """The connection's transport, except that a close is made final: if the peer has not
    taken the last bytes CLOSE_GRACE_S after it, the socket is aborted."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._cut: asyncio.TimerHandle | None = None
        self._lost = False

    def close(self) -> None:
        self._transport.close()
        self.cut_within(CLOSE_GRACE_S)

    def cut_within(self, grace_s: float) -> None:
        """Cut the socket `grace_s` from now, unless it is gone by then (or due sooner)."""
        # A connection lost already (a peer that reset it) has nothing left to cut: the app's
        # close comes after the loss there, and a cut armed then fired on a closed socket,
        # an error logged with its traceback for every client that went away so.
        due = self._loop.time() + grace_s
        if self._lost or (self._cut is not None and self._cut.when() <= due):
            return
        if self._cut is not None:
            self._cut.cancel()
        self._cut = self._loop.call_at(due, reset, self._transport)

    def forget(self) -> None:
        """The connection is gone: no cut is due, now or after a later close."""
        self._lost = True
        if self._cut is not None:
            self._cut.cancel()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedWebSocket(WebSocketsSansIOProtocol):
    _frames_in_message = 0
    # the connection's place among the server's, handed over at the upgrade (header_timeout.py)
    connection_cap: ConnectionCap | None = None
    # at shutdown, the rest of the shutdown time: a peer that does not read its close (1001,
    # sent in the streams' grace, or uvicorn's 1012) held the server CLOSE_GRACE_S past it
    shutdown_stall_s: float = CLOSE_GRACE_S  # set on the class serve.py makes

    def shutdown(self) -> None:
        super().shutdown()  # a close frame, if none was sent, and the transport's close
        cast(_ClosingTransport, self.transport).cut_within(self.shutdown_stall_s)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guarded = _ClosingTransport(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(cast(asyncio.Transport, guarded))

    def connection_lost(self, exc: Exception | None) -> None:
        cast(_ClosingTransport, self.transport).forget()
        if self.connection_cap is not None:
            self.connection_cap.release(self)
        super().connection_lost(exc)

    def eof_received(self) -> None:
        """The peer half-closed: closed here, through the guard (uvicorn's default lets the
        loop close the transport itself, past the cut: with a write buffer the peer does not
        read, the socket, its task and its stream were held for as long as it liked)."""
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # failed or closing: what the peer still sends is not read
        super().data_received(data)
        if not self.handshake_initiated:
            self._refuse_handshake()
        elif self.transport.get_write_buffer_size() > MAX_UNREAD:
            self._fail(1008, "the server's frames are not being read")

    def _refuse_handshake(self) -> None:
        """A handshake the parser refused: its 414 or 431, or a 400 for the rest (a body
        announced on the upgrade: the parser says nothing then), sent as problem JSON."""
        if self.conn.handshake_exc is None:
            return  # not whole yet
        refused = b"".join(self.conn.data_to_send())
        status = int(refused.split(b" ", 2)[1]) if refused.startswith(b"HTTP/") else 400
        phrase = http.HTTPStatus(status).phrase
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        self.transport.write(problem_answer(f"{status} {phrase}", {
            "type": "urn:runyard:problem:handshake-refused",
            "title": phrase,
            "status": status,
            "detail": f"the WebSocket handshake was refused: {self.conn.handshake_exc}",
        }))  # fmt: skip
        self.transport.close()

    def _fail(self, code: int, reason: str) -> None:
        log.info("websocket_failed", code=code, reason=reason, client=self.client)
        self.frames = []
        if not self.handshake_complete:
            # frames before the app accepted: no close frame may be sent yet (uvicorn's own
            # failure path asserts one was), the socket is closed and the app told by its loss
            self.transport.close()
            return
        self.conn.fail(code, reason)
        self.handle_parser_exception()  # the app told, the close frame sent, the socket closed

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            # a refusal sent whole ends the handshake: uvicorn, which counts only an accept,
            # logged each (a 401, a 404, a 422 of `after`) as an ASGI callable that returned
            # without completing it, at `error`
            self.handshake_complete = True

    def handle_text(self, event: Any) -> None:
        self._frames_in_message = 1
        super().handle_text(event)

    def handle_bytes(self, event: Any) -> None:
        self._frames_in_message = 1
        super().handle_bytes(event)

    def handle_cont(self, event: Any) -> None:
        if self.close_sent:
            return
        self._frames_in_message += 1
        if self._frames_in_message > MAX_FRAMES:
            self._fail(1009, f"a message of more than {MAX_FRAMES} frames")
            return
        super().handle_cont(event)

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            try:
                b"".join(self.frames).decode()
            except UnicodeDecodeError as exc:
                self._fail(1007, f"invalid UTF-8 at byte {exc.start}")
                return
        super().send_receive_event_to_app()


def guarded_websocket(shutdown_stall_s: float) -> type[GuardedWebSocket]:
    """The WebSocket protocol uvicorn makes one of per connection, with this cut at shutdown."""
    return type("GuardedWebSocket", (GuardedWebSocket,), {"shutdown_stall_s": shutdown_stall_s})
