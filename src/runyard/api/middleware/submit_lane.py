"""The submit lane: the common `POST /v1/runs` from the outside of the app straight to the
service, past the middleware and the router it would otherwise cross one by one.

Measured at C = 8, the middleware stack and the router between uvicorn and the submit route
cost about a fifth of the event loop's time per submission: seven ASGI layers, each with its
own closures, header scans and context. This lane does what they do for such a request, in
one place and with one pass over its headers — its request id and log line and metrics
(`RequestRecord`, shared with the request-context middleware), authentication and the submit
role (`check`, shared with the guards), the body cap and the stalled-body timer
(`StallWatch`), the exception handlers of the app — then the same request model and service
call as the submit route (`answer_submit`).

Only for a plain request: JSON (one Content-Type, no Content-Encoding, no key twice), a
Content-Length within the cap, no query, no `Idempotency-Key`, no relay, a token that is good
for submitting. Anything else, and a body
the model refuses, one past the cap or a client gone mid-body, goes on through the whole
stack, with what was read of the body handed on, so every refusal is answered and counted as
documented (under the request id the lane gave it).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runyard.api.fast_submit import PATH, replay
from runyard.api.inputs import header_int
from runyard.api.json_body import SMALL_BODY, duplicate_free, utf8_charset
from runyard.api.middleware.body_limit import BodyWaits, StallWatch
from runyard.api.middleware.request_context import RequestRecord
from runyard.api.routes.runs import MAX_PREFER, answer_submit
from runyard.api.security import check
from runyard.auth import RELAY_HEADER, Role
from runyard.errors import RunyardError
from runyard.runtime import Runtime
from runyard.schemas import SubmitRequest

_RELAY = RELAY_HEADER.encode()
Handler = Callable[[Request, Exception], Any]  # an app's exception handler, sync or async
_NOT_PLAIN = frozenset(
    {
        b"idempotency-key",
        _RELAY,
        b"expect",
        b"transfer-encoding",
        b"content-encoding",
        b"if-match",
        b"if-none-match",
    }
)


class SubmitLane:
    """The outermost of the app's own middleware (FastAPI's error handlers aside)."""

    def __init__(
        self, app: ASGIApp, runtime: Runtime, route: BaseRoute,
        handlers: Mapping[Any, Any], max_bytes: int, idle_s: float, waits: BodyWaits,
    ) -> None:  # fmt: skip
        self.app = app
        self.runtime = runtime
        self.route = route  # what metrics and logs label the request with
        # the app's handlers by exception class; Exception itself is the error middleware's
        self.handlers: dict[type, Handler] = {
            k: v for k, v in handlers.items() if isinstance(k, type)
        }
        self.handlers.pop(Exception, None)
        self.max_bytes = max_bytes
        self.idle_s = idle_s
        self.waits = waits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST"
            or scope["query_string"]
        ):  # fmt: skip
            await self.app(scope, receive, send)
            return
        prefer = self._plain(scope)
        if prefer is None:
            await self.app(scope, receive, send)
            return
        replay = await self._serve(scope, receive, send, prefer or None)
        if replay is not None:
            await self.app(scope, replay, send)

    def _plain(self, scope: Scope) -> str | None:
        """The Prefer header ("" if none) of a plain submission with a good token; else None."""
        found = _wanted_headers(scope)
        if found is None:
            return None
        sent = found.get(b"content-type", b"")
        content_type = sent.split(b";")[0].strip().lower()
        if b";" in sent and not utf8_charset(sent.decode("latin-1")):
            return None  # the stack refuses it (json_body.py)
        length = found.get(b"content-length", b"")
        prefer = found.get(b"prefer", b"")
        if content_type != b"application/json" or len(prefer) > MAX_PREFER:
            return None
        announced = header_int(length)
        if announced is None or announced > self.max_bytes:
            return None
        authorization = found.get(b"authorization")
        try:
            header = authorization.decode("latin-1") if authorization is not None else None
            check(self.runtime.auth, header, Role.SUBMIT, scope.setdefault("state", {}))
        except RunyardError:  # 401 or 403: the stack answers it, before reading the body
            return None
        return prefer.decode("latin-1")

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, prefer: str | None
    ) -> Receive | None:
        """Answer it, or hand it back (a `receive` that gives the body read) for the stack."""
        scope["route"] = self.route
        record = RequestRecord(scope, self.runtime.metrics, send)
        replay = None
        try:
            try:
                replay = await self._answer(scope, receive, record.send, prefer)
            except Exception as exc:
                handler = self._handler(exc)
                if handler is None or record.sent:
                    raise
                answer = handler(Request(scope, receive), exc)
                response = await answer if inspect.isawaitable(answer) else answer
                if response is not None:
                    await response(scope, receive, record.send)
        finally:
            if replay is None:
                record.close()
            else:
                del scope["route"]  # the router matches it again
                record.discard()
        return replay

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, prefer: str | None
    ) -> Receive | None:
        body, unread = await self._read(receive)
        if unread is not None:
            return replay(unread, receive)
        if len(body) > SMALL_BODY:  # read off the event loop, by the declared route
            return replay([_piece([body], more=False)], receive)
        try:
            request = SubmitRequest.model_validate_json(body)
        except ValidationError:  # the declared route names what is wrong
            return replay([_piece([body], more=False)], receive)
        if not duplicate_free(body):  # pydantic's reader took the last of a key given twice
            return replay([_piece([body], more=False)], receive)
        runs, settings = self.runtime.runs, self.runtime.settings
        response = await answer_submit(runs, settings, request, None, prefer, receive)
        await response(scope, receive, send)
        return None

    async def _read(self, receive: Receive) -> tuple[bytes, list[Message] | None]:
        """The whole body; or, if it went over the cap or the client left, what was read of
        it, as messages for the stack to read again (and refuse as it does)."""
        chunks: list[bytes] = []
        seen = 0
        watch = StallWatch(self.idle_s, self.waits)  # a stalled wait is a 408
        try:
            while True:
                message = await watch.receive(receive)
                if message["type"] != "http.request":
                    return b"", [_piece(chunks, more=True), message]
                chunks.append(message.get("body", b""))
                seen += len(chunks[-1])
                more = message.get("more_body", False)
                if seen > self.max_bytes:  # a Content-Length that undercounted
                    return b"", [_piece(chunks, more=more)]
                if not more:
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks), None
        finally:
            watch.close()

    def _handler(self, exc: Exception) -> Handler | None:
        for cls in type(exc).__mro__:
            if cls in self.handlers:
                return self.handlers[cls]
        return None


_WANTED = frozenset({b"content-type", b"content-length", b"authorization", b"prefer"})


def _wanted_headers(scope: Scope) -> dict[bytes, bytes] | None:
    """The first of each header the lane reads, in one pass; None if one rules it out."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name == b"prefer" and name in found:  # several are one list (RFC 7240)
            found[name] += b", " + value
        elif name in (b"content-type", b"authorization") and name in found:
            return None  # given twice: the stack refuses it
        elif name in _WANTED:
            found.setdefault(name, value)
        elif name in _NOT_PLAIN:
            return None
    return found


def _piece(chunks: list[bytes], *, more: bool) -> Message:
    return {"type": "http.request", "body": b"".join(chunks), "more_body": more}
