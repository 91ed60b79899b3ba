"""Request context: X-Request-ID on every response, one log line and metrics per request.

Pure ASGI (not BaseHTTPMiddleware) so streaming responses pass through untouched.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runyard.metrics import Metrics

log = structlog.get_logger("runyard.http")
WELL_FORMED = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if WELL_FORMED.fullmatch(candidate):
                return str(candidate)
            break
    return next(_ids)


def _request_ids() -> Iterator[str]:
    """Unique ids at the cost of a counter: a random prefix per process, then a sequence
    (a uuid4 per request costs a system call for randomness)."""
    prefix = secrets.token_hex(8)
    for n in itertools.count(1):
        yield f"{prefix}{n:016x}"


_ids = _request_ids()


COUNTED_METHODS = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "WS"})


def route_of(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


class RequestRecord:
    """One request's bookkeeping: its id (in its state, its log context and its answer's
    X-Request-ID), the status it was answered with, and at `close` its metrics and log line.
    For this middleware and the submit lane (submit_lane.py) alike."""

    __slots__ = ("_send", "metrics", "request_id", "scope", "sent", "started", "status")

    def __init__(self, scope: Scope, metrics: Metrics, send: Send) -> None:
        self.scope, self.metrics, self._send = scope, metrics, send
        state = scope.setdefault("state", {})
        # a request the submit lane handed on keeps the id the lane gave it
        self.request_id = state.get("request_id") or request_id_of(scope)
        state["request_id"] = self.request_id
        self.status = 500  # what an exception that escapes every handler becomes
        self.sent = False  # the answer has begun
        self.started = time.perf_counter()
        structlog.contextvars.bind_contextvars(request_id=self.request_id)

    async def send(self, message: Message) -> None:
        if message["type"] in ("http.response.start", "websocket.http.response.start"):
            self.status, self.sent = message["status"], True
            headers = list(message.get("headers", []))
            headers.append((b"x-request-id", self.request_id.encode()))
            # no answer of this server is to be read as anything but its declared type (a
            # log line or a program's file taken for a page): every one, not the UI's alone
            if not any(name.lower() == b"x-content-type-options" for name, _ in headers):
                headers.append((b"x-content-type-options", b"nosniff"))
            message = {**message, "headers": headers}
        elif message["type"] == "websocket.accept":
            self.status, self.sent = 101, True
        elif message["type"] == "websocket.close" and not self.sent:
            self.status, self.sent = 403, True  # refused before accepting: what the client gets
        await self._send(message)

    def close(self) -> None:
        """The request is over: count it, log it, and leave its log context."""
        try:
            self._record(time.perf_counter() - self.started)
        finally:
            self.discard()

    def discard(self) -> None:
        """Leave its log context, uncounted (the request goes on elsewhere, counted there)."""
        structlog.contextvars.unbind_contextvars("request_id")

    def _record(self, seconds: float) -> None:
        scope = self.scope
        method = scope.get("method", "WS")
        if method not in COUNTED_METHODS:  # one label for the rest: PROPFIND on 27 routes
            method = "OTHER"  # made /metrics 18 times longer
        route = route_of(scope)
        self.metrics.child(self.metrics.http_requests, method, route, str(self.status)).inc()
        self.metrics.child(self.metrics.http_duration, method, route).observe(seconds)
        principal = scope.get("state", {}).get("principal", "anonymous")
        log.info(
            "request", method=method, route=route, status=self.status,
            duration_ms=round(seconds * 1000, 3), request_id=self.request_id,
            principal=principal,
        )  # fmt: skip


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        record = RequestRecord(scope, self.metrics, send)
        try:
            await self.app(scope, receive, record.send)
        finally:
            record.close()
