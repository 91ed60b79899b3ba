"""SSE responses of the live routes: heartbeats, the shutdown grace, and a watcher that cannot
take a send in time, which is dropped as lagged (told so when it can still take one last
event, else its connection is cut) — never an unhandled error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Message, Receive, Scope, Send

from runyard.api.client_gone import cut
from runyard.config import Settings
from runyard.streams.hub import StreamHub, stream_grace_s

log = structlog.get_logger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# The ASGI extension through which the server's HTTP protocol (cli/header_timeout.py) lets a
# response drop its connection at once: what ASGI itself offers is a close that first flushes
# what the peer never reads, and so holds the socket for as long as the peer likes.

# What a stream says to a watcher it drops for falling behind, given the id of the last
# event handed to its connection (None: none with an id yet).
Farewell = Callable[[str | None], ServerSentEvent]


class FramedEvent(ServerSentEvent):
    """An event framed as sse-starlette frames it (`data: ` before each line, CRLF after), by
    one `bytes.replace` where sse-starlette splits and writes line by line in Python: a
    catch-up of a large log of short lines to many watchers spent seconds of the event loop
    there, holding every other request. `lines`: UTF-8 without a CR (each line ends with LF
    alone, as SSE reads it back); `id` and `event` ours, with no line break."""

    def __init__(self, lines: bytes, *, event: str, id: str) -> None:
        super().__init__(event=event, id=id)
        self._framed = b"data: " + lines.replace(b"\n", b"\r\ndata: ") + b"\r\n\r\n"
        self._head = f"id: {id}\r\nevent: {event}\r\n".encode()

    def encode(self) -> bytes:
        return self._head + self._framed


class FellBehind(Exception):
    """The connection did not take a send within the stream's send timeout."""


@dataclass
class _Delivered:
    last_id: str | None = None
    # the event handed to the connection last was `lagged`: its buffer had dropped the
    # watcher, which was counted then (a stalled send of it is the same drop, not another)
    told_lagged: bool = False


class _Paced:
    """The response's `send`, each body send given `timeout_s`: one not taken by then means
    the watcher fell behind, and every send after it fails at once (a heartbeat's as well as
    an event's). uvicorn waits for its write buffer to drain before it writes, so a send cut
    by the timeout wrote nothing: the last event handed over is the one before it.

    One timer for the response, moved rather than remade (the event stream's and the
    heartbeat's sends may wait at once): a cancel scope per send (`anyio.move_on_after`)
    cost 24 us of the event loop per event per watcher, a quarter of what a hundred
    watchers of a flood of progress took (a probe: `/health/live` answered in seconds)."""

    def __init__(self, send: Send, timeout_s: float) -> None:
        self._send, self.timeout_s = send, timeout_s
        self.behind = False
        self.ended = False  # the response's last body send was taken
        self._loop = asyncio.get_running_loop()
        self._sending: dict[asyncio.Task[Any], float] = {}  # waiting in a send, since when
        self._overdue: set[asyncio.Task[Any]] = set()  # cancelled by the timer
        self._timer: asyncio.TimerHandle | None = None

    async def send(self, message: Message) -> None:
        if self.behind:
            raise FellBehind
        task = asyncio.current_task()
        if message["type"] != "http.response.body" or task is None:
            await self._send(message)
            return
        self._sending[task] = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_later(self.timeout_s, self._check)
        try:
            await self._send(message)
        except asyncio.CancelledError:
            if task not in self._overdue:
                raise
            self._overdue.discard(task)
            task.uncancel()  # the cancel was the timer's: the send is over, not the task
            self.behind = True
            raise FellBehind from None
        finally:
            self._sending.pop(task, None)
        self.ended = not message.get("more_body", False)

    def _check(self) -> None:
        self._timer = None
        now, soonest = self._loop.time(), None
        for task, since in list(self._sending.items()):
            left = since + self.timeout_s - now
            if left > 0:
                soonest = left if soonest is None else min(soonest, left)
            elif task not in self._overdue:
                self._overdue.add(task)
                task.cancel()
        if soonest is not None:
            self._timer = self._loop.call_later(soonest, self._check)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _only_fell_behind(exc: BaseException) -> bool:
    """The stream's task group raised FellBehind, alone or in a group with nothing else."""
    if isinstance(exc, FellBehind):
        return True
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(FellBehind)
        return rest is None
    return False


class WatcherStream(EventSourceResponse):
    """sse-starlette's response, with its send timeout meaning "this watcher fell behind"
    (sse-starlette's own raises SendTimeoutError out of the app: an unhandled error logged,
    and the watcher never told)."""

    def __init__(
        self,
        events: AsyncIterator[ServerSentEvent],
        *,
        settings: Settings,
        hub: StreamHub,
        farewell: Farewell,
    ) -> None:
        self._delivered = _Delivered()
        self._hub, self._farewell = hub, farewell
        self._send_timeout_s = settings.stream_send_timeout_s
        super().__init__(
            _held(hub, _noted(events, self._delivered)), ping=settings.heartbeat_s,
            send_timeout=None, headers=SSE_HEADERS,
            shutdown_grace_period=stream_grace_s(settings.shutdown_timeout_s),
        )  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        paced = _Paced(send, self._send_timeout_s)
        try:
            await super().__call__(scope, receive, paced.send)
        except BaseException as exc:
            paced.close()
            if not (paced.behind and _only_fell_behind(exc)):
                raise
        else:
            paced.close()
            if self._hub.closed and not paced.ended:
                # Shutdown's grace for streams is over and this one's `shutdown` event was
                # not taken: its client does not read. Closed, not cut, its connection kept
                # the server from exiting for as long as uvicorn flushed to it (the rest of
                # the shutdown time again: 1.5 times it in all).
                await cut(scope, receive, reset=True)
            return
        if not self._delivered.told_lagged:
            self._hub.note_lagged()
        with self._hub.stream():  # shutdown waits for the farewell too (bounded below)
            await self._part(scope, receive, send)

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        """Each send as it is: `_Paced` bounds it (sse-starlette's own cancel scope, one per
        send, bounded nothing here: its timeout is None)."""
        await send(message)

    async def _part(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The farewell and the response's end, if the connection takes them within another
        send timeout (a slow reader does); else the connection is cut."""
        last = self._farewell(self._delivered.last_id).encode()
        with anyio.move_on_after(self._send_timeout_s):
            await send({"type": "http.response.body", "body": last, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            log.info("stream_lagged", path=scope.get("path"), told=True)
            return
        log.info("stream_lagged", path=scope.get("path"), told=False)
        # not reading: nothing it was sent is owed it (on another server, which closes the
        # connection itself, as that server does)
        await cut(scope, receive, reset=True)


async def _noted(
    events: AsyncIterator[ServerSentEvent], delivered: _Delivered
) -> AsyncIterator[ServerSentEvent]:
    """The events, noting each one's id once its send has returned: sse-starlette asks for the
    next event only then, so an event whose send failed is never noted."""
    async for event in events:
        delivered.told_lagged = event.event == "lagged"
        yield event
        if event.id is not None:
            delivered.last_id = event.id


async def _held(
    hub: StreamHub, events: AsyncIterator[ServerSentEvent]
) -> AsyncIterator[ServerSentEvent]:
    """The stream counts as open (shutdown waits for it) from its first event to its end."""
    with hub.stream():
        async for event in events:
            yield event


def sse_response(
    settings: Settings,
    hub: StreamHub,
    events: AsyncIterator[ServerSentEvent],
    farewell: Farewell,
) -> WatcherStream:
    """Heartbeats while idle; a watcher that cannot take a send within
    `stream_send_timeout_s` is dropped with `farewell` (its `lagged` event).

    At shutdown the hub tells every stream, which sends a whole `shutdown` event and ends;
    sse-starlette's own shutdown watcher would cancel the stream at once (mid-stream, no
    event), so it is given a grace period and only cuts a stream that did not end by then."""
    return WatcherStream(events, settings=settings, hub=hub, farewell=farewell)
