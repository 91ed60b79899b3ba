"""Conditions on a change (RFC 9110 13.1): If-Match and If-None-Match on a request that changes
something — a submit, a cancel, a delete, a schedule's patch, an upload.

runyard's JSON resources (a run, a batch, a schedule, the collections they are made in) carry
no entity tag, so no tag a client names can be one of theirs: the condition fails, and RFC 9110
13.1.1 has the method not performed, a 412. They were read by nobody: a client guarding a
DELETE or a PATCH against a lost update (`If-Match: "what I read"`) had it done whatever it
held. `If-Match: *` (any current version) holds, and the route answers as ever (404 for what
does not exist); `If-None-Match: *` (none may exist yet) fails, the target being there.
If-None-Match with tags holds, none being ours; If-Unmodified-Since is ignored, as 13.1.4 has
it for a resource with no modification date. Downloads, which have tags, are GETs: their own
conditions are preconditions.py's.

Checked once the route is known (a path or method with none is its 404 or 405, which RFC 9110
13.2.1 puts before any condition) and before the body is read; the target's existence is not
looked up here, so a condition that fails on an id nothing has is a 412 too.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from runyard.api.middleware.answer import send_problem
from runyard.api.middleware.head_as_get import full_match, routes_of

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def failed(headers: list[tuple[bytes, bytes]]) -> tuple[str, str] | None:
    """The condition that fails on a resource with no tag (header, why), or None."""
    lines: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        if name in (b"if-match", b"if-none-match"):
            lines.setdefault(name, []).append(value)
    if b"if-match" in lines and b",".join(lines[b"if-match"]).strip() != b"*":
        return "If-Match", "this resource has no entity tag: no tag named can be its version"
    if b"if-none-match" in lines and b",".join(lines[b"if-none-match"]).strip() == b"*":
        return "If-None-Match", "`*` asks that nothing exist here, and the target does"
    return None


class ChangeConditions:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in CHANGES:
            why = failed(scope["headers"])
            if why is not None and full_match(routes_of(scope), scope, scope["method"]):
                header, detail = why
                await send_problem(
                    send, 412, "Precondition failed", "precondition-failed",
                    f"{header}: {detail}", field=f"header.{header}",
                )  # fmt: skip
                return
        await self.app(scope, receive, send)
