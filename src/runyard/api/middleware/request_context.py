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
            if WELL_FORMED.match(candidate):
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


def route_of(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, status, time.perf_counter() - started, request_id)
            structlog.contextvars.unbind_contextvars("request_id")

    def _record(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        method = scope.get("method", "WS")
        route = route_of(scope)
        self.metrics.child(self.metrics.http_requests, method, route, str(status)).inc()
        self.metrics.child(self.metrics.http_duration, method, route).observe(seconds)
        principal = scope.get("state", {}).get("principal", "anonymous")
        log.info(
            "request", method=method, route=route, status=status,
            duration_ms=round(seconds * 1000, 3), request_id=request_id, principal=principal,
        )  # fmt: skip
