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
    _stall: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall is None:
            self._stall = self.loop.call_later(self.stall_s, self._stalled)

    def resume_writing(self) -> None:
        self._unstall()
        super().resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._unstall()
        super().connection_lost(exc)

    def _unstall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _stalled(self) -> None:
        # A closing one too: a close waits for what the client does not take, its socket
        # held for as long (an answer with `Connection: close` whose last bytes sat unread)
        self._stall = None
        cycle = self.cycle
        path = cycle.scope.get("path") if cycle is not None else None
        log.info("client_stalled", path=path, stall_s=self.stall_s)
        # not close(): that would first flush to a client that does not read
        reset(self.transport)
