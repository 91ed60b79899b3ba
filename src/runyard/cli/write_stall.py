"""A client that takes nothing of an answer for `stall_s` has its connection cut.

uvicorn's flow control waits as long as the client's socket is full: a client that asks for a
large file, a log or a relayed stream and never reads would hold the response, its open file,
and on a cluster a connection of the relaying server's pool to the member that holds the
files (and that member's file and stream behind it), for as long as the client keeps its
socket open. The event loop says when a connection's send buffer is full and when it drains
again (`pause_writing`, `resume_writing`): a connection paused for `stall_s` without draining
is aborted, whatever the answer, as nginx's `send_timeout` does. A slow reader is not cut as
long as it drains the buffer (to the loop's low mark, about 48 KiB) once a period: each drain
starts the time again. Finer progress is not seen (the kernel's own buffer moves too).

Watchers of a stream are dropped sooner and told first (api/sse.py: its `lagged` event within
`stream_send_timeout_s`, then as long again for the farewell): `stall_s` leaves them that
(serve.py's `stall_s`), so this cut is what is left for every other answer.

A connection closed with bytes its client has not taken is waited on the same way: asyncio's
close flushes first, for ever if the client never reads, and one never paused (its last bytes
under the high mark) would never be cut.

At shutdown (uvicorn calls `shutdown` on each connection once the streams have had their
grace) every connection has `shutdown_stall_s`, the rest of the shutdown time, to end, whatever
it does meanwhile, and is reset past it: a close owed to a client that does not read (an
answer complete with its tail unread, a stream whose `shutdown` event went out just before its
client's buffers filled), and a download a client takes slowly but steadily, held the server
until uvicorn's own graceful time ran out, which then cancelled the answer mid-way with a
traceback in the log.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from runyard.cli.reset import reset

log = structlog.get_logger("runyard.http")
_BASE: Any = AutoHTTPProtocol


class WriteStallGuard(_BASE):  # type: ignore[misc]
    stall_s: float = 75.0  # set on the class serve.py makes
    shutdown_stall_s: float = 5.0  # likewise
    _stall: asyncio.TimerHandle | None = None
    _stall_limit_s = 0.0
    _last_call: asyncio.TimerHandle | None = None  # shutdown's cut, set once

    def pause_writing(self) -> None:
        super().pause_writing()
        self._within(self.stall_s)

    def resume_writing(self) -> None:
        self._unstall()
        super().resume_writing()
        self._owed_on_close()  # drained below the low mark, not whole: it must go on

    def on_response_complete(self) -> None:
        super().on_response_complete()  # closed here when the answer was the connection's last
        self._owed_on_close()

    def timeout_keep_alive_handler(self) -> None:
        super().timeout_keep_alive_handler()
        self._owed_on_close()

    def shutdown(self) -> None:
        super().shutdown()
        if self._last_call is None:  # (its loss, at once if nothing is owed, cancels it)
            self._last_call = self.loop.call_later(self.shutdown_stall_s, self._cut_at_shutdown)

    def _owed_on_close(self) -> None:
        transport: asyncio.WriteTransport = self.transport
        if transport.is_closing() and transport.get_write_buffer_size() > 0:
            self._within(self.stall_s)

    def _within(self, limit_s: float) -> None:
        """The connection is cut unless it drains within `limit_s` (or sooner, if so set)."""
        due = self.loop.time() + limit_s
        if self._stall is not None and self._stall.when() <= due:
            return
        self._unstall()
        self._stall, self._stall_limit_s = self.loop.call_at(due, self._stalled), limit_s

    def connection_lost(self, exc: Exception | None) -> None:
        self._unstall()
        if self._last_call is not None:
            self._last_call.cancel()
        super().connection_lost(exc)

    def _unstall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _cut_at_shutdown(self) -> None:
        self._reset("connection_cut_at_shutdown", after_s=self.shutdown_stall_s)

    def _stalled(self) -> None:
        # A closing one too: a close waits for what the client does not take, its socket
        # held for as long (an answer with `Connection: close` whose last bytes sat unread)
        self._stall = None
        self._reset("client_stalled", stall_s=self._stall_limit_s)

    def _reset(self, event: str, **said: float) -> None:
        cycle = self.cycle
        log.info(event, path=cycle.scope.get("path") if cycle is not None else None, **said)
        # not close(): that would first flush to a client that does not read
        reset(self.transport)
