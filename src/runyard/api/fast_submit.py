"""The fast path of `POST /v1/runs`, the one request every run makes.

FastAPI's machinery (nested-router matching, seven dependency resolutions, parameter models)
cost about a third of the event loop's time per submission. This route comes first in the
router and does the same thing directly — the same role check, the same request model
(`SubmitRequest`, parsed by pydantic-core from the bytes), the same service call and answer
(`answer_submit`) — for a well-formed request. Anything else (another content type, an
encoding, an `Idempotency-Key`, a body the model refuses or with a key twice, a `Prefer`
over its limit) is handed, body and
all, to the declared FastAPI route, so every error is answered exactly as documented. The
OpenAPI document describes the declared route; this one is not in it (it is the same).
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, HTTPConnection
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from runyard.api.deps import relay_signer, runtime_of
from runyard.api.json_body import SMALL_BODY, duplicate_free
from runyard.api.multipart_submit import is_multipart, submit_multipart
from runyard.api.routes import runs as runs_routes
from runyard.api.routes.runs import MAX_PREFER, answer_submit, prefer_of
from runyard.api.security import authorize
from runyard.auth import Role
from runyard.schemas import SubmitRequest

PATH = "/v1/runs"


class FastSubmit:
    """An ASGI app for Starlette's Route: runs inside the app's exception handlers."""

    def __init__(self, declared: APIRoute) -> None:
        self.declared = declared

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        if is_multipart(headers):  # the run and its files, streamed (not a body to hold)
            await submit_multipart(scope, receive, send)
            return
        if headers.getlist("content-type") != ["application/json"] or "content-encoding" in headers:
            # the declared route, its body unread: one it refuses (415) is refused before a
            # byte of it is asked for (an `Expect: 100-continue` is not told to send it)
            await self.declared.handle(scope, receive, send)
            return
        try:
            body = await read_body(receive)  # capped by BodyLimitMiddleware as it streams
        except ClientDisconnect:
            # gone mid-body: what the declared route answers (and logs) then, not a 500
            raise HTTPException(400, "There was an error parsing the body") from None
        request = self._well_formed(headers, body)
        if request is None:
            whole = {"type": "http.request", "body": body, "more_body": False}
            await self.declared.handle(scope, replay([whole], receive), send)
            return
        conn = HTTPConnection(scope)
        runtime = runtime_of(conn)
        authorize(scope, runtime.auth, relay_signer(conn), Role.SUBMIT)
        response = await answer_submit(
            runtime.runs, runtime.settings, request, None, prefer_of(headers), receive
        )
        await response(scope, receive, send)

    @staticmethod
    def _well_formed(headers: Headers, body: bytes) -> SubmitRequest | None:
        if headers.getlist("content-type") != ["application/json"]:
            return None
        if "idempotency-key" in headers or len(", ".join(headers.getlist("prefer"))) > MAX_PREFER:
            return None
        if "content-encoding" in headers or len(body) > SMALL_BODY:
            return None  # a large body is read off the event loop, by the declared route
        try:
            request = SubmitRequest.model_validate_json(body)
        except ValidationError:
            return None
        # pydantic's reader lets the last of a key given twice win (2 to 4 us to rule out)
        return request if duplicate_free(body) else None


async def read_body(receive: Receive) -> bytes:
    """The whole body, as `Request.body()` reads it, without the async generator and its
    context manager it goes through: a tenth of the loop's time per submission, measured."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        if body := message.get("body", b""):
            chunks.append(body)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def replay(read: list[Message], receive: Receive) -> Receive:
    """`receive` for the declared route: the messages already read, then the connection's."""
    pending = list(read)

    async def again() -> Message:
        return pending.pop(0) if pending else await receive()

    return again


class _FastRoute(Route):
    """Matches a POST of the path and nothing else: any other method goes on to the declared
    routes, which answer OPTIONS and 405 with the path's whole Allow list."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get("method") != "POST":
            return Match.NONE, {}
        match, child = super().matches(scope)
        if match is Match.FULL:
            child["route"] = self  # what metrics and logs label the request with
        return match, child


def install(app: FastAPI) -> Route:
    """Put the fast path first, in front of the declared route it stands for: the route."""
    declared = next(
        r for r in runs_routes.router.routes
        if isinstance(r, APIRoute) and r.path == PATH and "POST" in (r.methods or set())
    )  # fmt: skip
    route = _FastRoute(PATH, FastSubmit(declared), methods=["POST"], include_in_schema=False)
    app.router.routes.insert(0, route)
    return route
