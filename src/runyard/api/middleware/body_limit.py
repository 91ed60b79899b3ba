"""Request body cap: an announced oversize body (Content-Length) is refused at once, unread;
any other (chunked, or a Content-Length that undercounts) as soon as what was read passes the
cap, so no body is ever held whole past it. Answered as problem JSON naming the limit
(FastAPI's own `max_body_size` sits outside the app's handlers and answers plain text).

A body may take its time, but not stall: while the app waits for more of it, nothing for
`idle_s` (RUNYARD_HEADER_TIMEOUT_S) ends the request with 408 and the connection (uploads and
multipart submissions too, whose size caps are their own). Timed here,
inside `receive`, only while the app asks for the body, so a body uvicorn holds back (flow
control, a pipelined request behind another, `Expect: 100-continue`) is never timed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runyard.api.inputs import header_int, is_form_data
from runyard.api.middleware.answer import send_problem

UPLOADS = "/v1/uploads"
# The least a body must average while the server waits for it, once it has waited twice the
# idle time: a byte now and then would otherwise hold a connection (and an upload's file) for ever
# without ever stalling. Kestrel's default minimum data rate.
MIN_BODY_RATE = 240
RATE_WINDOWS = 4  # the average is of about the last 2-4 idle times of waiting, not all of it
RUNS = "/v1/runs"  # as multipart/form-data: files stream to the uploads (api/multipart_submit.py)


class BodyTooLargeError(HTTPException):
    """An HTTPException, because FastAPI turns any other error raised while it reads a body
    into a 400; this one it lets through to the problem handlers, which answer it with its
    `title` and `slug` (the same problem as `_refuse`'s, however the body came)."""

    title, slug = "Payload too large", "body-too-large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, too_large(max_bytes), headers={"Connection": "close"})


class BodyStalledError(HTTPException):
    """An HTTPException, for the same reason as BodyTooLargeError."""

    title, slug = "Request body stalled", "body-stalled"

    def __init__(self, idle_s: float, *, trickled: bool = False) -> None:
        detail = f"the request body stalled: nothing for {idle_s:g} s (RUNYARD_HEADER_TIMEOUT_S)"
        if trickled:
            detail = (
                f"the request body came slower than {MIN_BODY_RATE} bytes/s, past its first "
                f"{2 * idle_s:g} s (twice RUNYARD_HEADER_TIMEOUT_S)"
            )
        super().__init__(408, detail, headers={"Connection": "close"})


class BodyCutAtShutdownError(HTTPException):
    """An HTTPException, for the same reason as BodyTooLargeError."""

    title, slug = "Service unavailable", "unavailable"

    def __init__(self) -> None:
        detail = "the server is shutting down before the request body came whole; send it again"
        super().__init__(503, detail, headers={"Connection": "close", "Retry-After": "5"})


class BodyWaits:
    """The requests waiting for more of their body. At shutdown (`close`) each ends at once,
    503 with its connection, what it brought discarded as for a body that stalls; and so does
    one that asks for its body later. Shutdown is bounded, a body is not: an upload that
    trickled or stalled held the server until uvicorn's graceful time ran out, and then got a
    bare 500 with a traceback in the log."""

    def __init__(self) -> None:
        self.closed = False
        self.waiting: set[StallWatch] = set()  # each while it waits

    def close(self) -> None:
        self.closed = True
        for watch in list(self.waiting):
            watch.cut()


def has_body(scope: Scope) -> bool:
    """The request says a body comes: a Content-Length but 0, or a Transfer-Encoding."""
    for name, value in scope.get("headers", []):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def too_large(max_bytes: int) -> str:
    return f"the request body is over the limit of {max_bytes // 1024} KiB (max_body_kb)"


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, max_bytes: int, idle_s: float = 10.0, waits: BodyWaits | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.idle_s = idle_s
        self.waits = waits or BodyWaits()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == UPLOADS or _multipart_submit(scope):
            # uploads stream to disk under their own, larger caps (services/uploads): timed
            # like any body, not counted here
            await self._counted(scope, receive, send, cap=None)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                announced = header_int(value)
                if announced is None or announced > self.max_bytes:
                    await self._refuse(send)
                    return
                break
        await self._counted(scope, receive, send, self.max_bytes)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, cap: int | None) -> None:
        """The app, its body counted against `cap` (None: not counted here) and timed while
        it is asked for."""
        seen = 0
        started = False
        whole = False  # the body is all in: what the app awaits now is the client leaving
        watch = StallWatch(self.idle_s, self.waits if has_body(scope) else None)

        async def counting_receive() -> Message:
            nonlocal seen, whole
            if whole:
                return await receive()
            message = await watch.receive(receive)
            whole = message["type"] != "http.request" or not message.get("more_body", False)
            if whole:
                watch.close()
            seen += len(message.get("body", b""))
            if cap is not None and seen > cap:
                raise BodyTooLargeError(cap)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await self._refuse(send)
        finally:
            watch.close()

    async def _refuse(self, send: Send) -> None:
        error = BodyTooLargeError
        await send_problem(send, 413, error.title, error.slug, too_large(self.max_bytes))


class StallWatch:
    """A request's body may not stall: a wait in `receive` with nothing for `idle_s` ends it
    (BodyStalledError), and so does a body that averages under MIN_BODY_RATE over the time
    spent waiting for it, once that is past twice `idle_s` (the older part of it halved, and
    what came then, each time it passes RATE_WINDOWS times `idle_s`). One timer per request at most,
    moved rather than remade: a timeout context per receive cost about 2 % of the server's
    CPU per submission (A/B)."""

    def __init__(self, idle_s: float, waits: BodyWaits | None) -> None:
        """`waits`: None for a request that has no body (nothing to cut at shutdown: its one
        message is there at once, and a download asks again only to hear its client leave)."""
        self.idle_s = idle_s
        self._waits = waits
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._waiting: tuple[float, asyncio.Task[Any]] | None = None  # since when, and who
        self._stalled = False
        self._cut = False  # by shutdown
        self._waited = 0.0  # seconds spent waiting for the body, and what came meanwhile
        self._came = 0

    async def receive(self, receive: Receive) -> Message:
        waits = self._waits
        if waits is not None and waits.closed:
            raise BodyCutAtShutdownError
        task = asyncio.current_task()
        began = self._loop.time()
        if task is not None:
            self._waiting = (began, task)
            if waits is not None:
                waits.waiting.add(self)
            if self._timer is None:
                self._timer = self._loop.call_later(self.idle_s, self._check)
        try:
            message = await receive()
        except asyncio.CancelledError:
            if not (self._stalled or self._cut) or task is None:
                raise
            task.uncancel()  # the cancel was ours: the request ends so, not cancelled
            if self._cut:
                raise BodyCutAtShutdownError from None
            self._stalled = False
            raise BodyStalledError(self.idle_s) from None
        finally:
            self._waiting = None
            if waits is not None:
                waits.waiting.discard(self)
        self._count(self._loop.time() - began, len(message.get("body", b"")))
        return message

    def _count(self, waited: float, came: int) -> None:
        """A wait for the body over: BodyStalledError if it now averages under the floor."""
        self._waited += waited
        self._came += came
        if self._waited > 2 * self.idle_s and self._came < self._waited * MIN_BODY_RATE:
            raise BodyStalledError(self.idle_s, trickled=True)
        if self._waited > RATE_WINDOWS * self.idle_s:
            # what came long ago counts less and less: averaged since the start, a fast
            # first burst bought hours of a byte now and then (a probe: 48 KB held an upload
            # 200 s; 100 MB would hold one for days), where now it buys a few halvings
            self._waited /= 2
            self._came //= 2

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def cut(self) -> None:
        """Shutdown: the wait under way ends now."""
        if self._waiting is not None and not self._cut:
            self._cut = True
            self._waiting[1].cancel()

    def _check(self) -> None:
        self._timer = None
        if self._waiting is None:
            return  # not waiting now: the next wait arms it again
        since, task = self._waiting
        left = since + self.idle_s - self._loop.time()
        if left > 0:
            self._timer = self._loop.call_later(left, self._check)
            return
        self._stalled = True
        task.cancel()


def _multipart_submit(scope: Scope) -> bool:
    if scope["path"] != RUNS or scope["method"] != "POST":
        return False
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return is_form_data(value.decode("latin-1"))
    return False
