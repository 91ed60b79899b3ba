"""At most `max_requests` requests at once: past it, a 503 at once, before anything is read.

Every request in progress holds a descriptor (its socket) and many hold more: a download its
open file, a relayed one a connection to the member. A client that asks for large files and
never reads held two each until the write-stall cut (`cli/write_stall.py`, 75 s): ten
thousand of them took all 20,000 of the server's descriptors, and with them `/health/live`,
uploads (EMFILE) and new connections. Capped, what they hold is bounded below the process's
limit (`default_max_requests`), and a request past the cap is answered at once with what it
is (`out-of-resources`, the limit named, `Retry-After`), its connection closed, so it holds
nothing either.

The health routes and `/metrics` are never refused: a probe asks whether the server lives
and can work, and answers that truthfully (readiness says saturated when it is) only if it is
answered; monitoring that went blind when the server is saturated would miss exactly that.
A WebSocket past the cap is refused with the same problem, as an HTTP answer to its handshake
where the server can send one (a close alone reaches a client as a bare 403).
"""

from __future__ import annotations

import resource
import time

import structlog
from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runyard.api.middleware.answer import send_problem

log = structlog.get_logger("runyard.http")

EXEMPT = ("/health", "/metrics")  # /health, /health/live, /health/ready, /metrics
FDS_KEPT = 256  # the store, logs, the supervisor, listings, spawns, the listener: never theirs
TOLD_EVERY_S = 1.0  # refusals come in floods: one log line a second says how many


def descriptor_budget() -> int:
    """Descriptors the process may give its connections and requests: its soft limit, less
    what the server keeps for itself."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(64, soft - FDS_KEPT)


def default_max_requests() -> int:
    """A quarter of the budget. A request at its most holds its connection's socket and two
    more (an open file, a relayed connection); with every connection open that the
    connection cap allows (half the budget, cli/connection_cap.py), the descriptors held stay
    within the process's limit."""
    return max(16, descriptor_budget() // 4)


class RequestCap:
    def __init__(self, app: ASGIApp, max_requests: int, refused: Counter | None = None) -> None:
        self.app = app
        self.max_requests = max_requests
        self.refused = refused  # /metrics counts every refusal; the log says so once a second
        self.in_progress = 0
        self._refused = 0  # since the last line that said so
        self._told_at = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"].startswith(EXEMPT):
            await self.app(scope, receive, send)
            return
        if self.in_progress >= self.max_requests:
            await self._refuse(scope, send)
            return
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1

    async def _refuse(self, scope: Scope, send: Send) -> None:
        self._refused += 1
        if self.refused is not None:
            self.refused.inc()
        now = time.monotonic()
        if now - self._told_at >= TOLD_EVERY_S:
            log.warning("requests_refused_at_cap", refused=self._refused,
                        max_requests=self.max_requests)  # fmt: skip
            self._refused, self._told_at = 0, now
        detail = (f"the server has {self.max_requests} requests in progress, its most "
                  "(RUNYARD_MAX_REQUESTS); try again shortly")  # fmt: skip
        if scope["type"] == "websocket":
            if "websocket.http.response" not in scope.get("extensions", {}):
                await send({"type": "websocket.close", "code": 1013})  # try again later
                return
            send = _as_denial(send)
        await send_problem(send, 503, "Out of resources", "out-of-resources", detail,
                           [(b"retry-after", b"1")])  # fmt: skip


def _as_denial(send: Send) -> Send:
    """An HTTP answer sent as a WebSocket handshake's denial (the ASGI extension)."""

    async def denial(message: Message) -> None:
        kind = message["type"].removeprefix("http.")
        await send({**message, "type": f"websocket.http.{kind}"})

    return denial
