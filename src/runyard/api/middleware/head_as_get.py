"""HEAD wherever GET is (RFC 9110 9.1: a general-purpose server MUST support both).

A HEAD to a path whose route declares only GET is answered by that route as a GET with its
body left out: the status and the headers GET would send, its Content-Length among them. It
was a 405, so that `curl -I`, a download tool asking for a size first, or a monitor that
checks `/health/live` with HEAD all heard that the server does not have the path. Routes that
declare HEAD themselves (a log's range, a download) answer it their own way, without reading
what they would send. A streamed answer (events, a followed log) ends once its headers are
out: its producer is stopped, never left running for nobody, and the connection is free for
the next request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# set in the scope a HEAD is answered with as a GET: the relay asks the owner with a HEAD
ASKED_HEAD = "runyard.asked_head"


class _Answered(BaseException):
    """Raised through the route once a HEAD's headers are out, to stop what would go on
    producing a body (a stream). A BaseException, as a cancellation is: no handler of the
    route's takes it for a failure of its own and answers it."""


def routes_of(scope: Scope) -> Sequence[BaseRoute]:
    return scope["app"].router.routes  # type: ignore[no-any-return]


def full_match(routes: Sequence[BaseRoute], scope: Scope, method: str) -> bool:
    """Whether a route takes `method` at the scope's path."""
    probe = {**scope, "method": method}
    return any(route.matches(probe)[0] is Match.FULL for route in routes)


def answered_as_get(routes: Sequence[BaseRoute], scope: Scope) -> bool:
    """A HEAD to this path is its GET's answer without the body: no route declares HEAD
    for it, and one declares GET."""
    return not full_match(routes, scope, "HEAD") and full_match(routes, scope, "GET")


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http" or scope["method"] != "HEAD"
            or not answered_as_get(routes_of(scope), scope)
        ):  # fmt: skip
            await self.app(scope, receive, send)
            return
        # A copy: the server's own scope stays a HEAD's, so that it sends no body and expects
        # none (it checks the Content-Length GET announces against a GET's body otherwise).
        as_get: dict[str, Any] = {**scope, "method": "GET", ASKED_HEAD: True}
        ended = False

        async def head_send(message: Message) -> None:
            nonlocal ended
            if ended:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    return  # the route's own last piece: it ends as it would
                raise _Answered  # a stream goes on: stopped here
            await send(message)
            if message["type"] == "http.response.start":
                # ended with its headers, not with the route's first piece: a stream with
                # nothing to send yet (events past the last, a queued run's log) held the
                # connection until its heartbeat; and the route's receive now says the
                # client is gone, so a stream waiting for news stops at once
                ended = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            await self.app(as_get, receive, head_send)
        except* _Answered:  # raised plain, or from a task group of the stream's
            pass
        finally:
            # what the router found, for the request's log line and metrics (request_context)
            if "route" in as_get:
                scope.setdefault("route", as_get["route"])
