"""A server without tokens answers the machine it runs on, not the web pages its browsers show.

With no tokens, loopback is the only fence, and a browser on the machine is inside it: any page
it shows could send what a browser sends across sites without asking first (a form's
multipart submit, an empty POST of a cancel, a `text/plain` upload, a WebSocket: a probe did
each). So, while authentication is off, a change (`POST`, `PUT`, `PATCH`, `DELETE`) or a
WebSocket sent by a browser from another origin is a `403` naming `header.Origin` (an `Origin`
that is not this `Host`, `null` included) or `header.Sec-Fetch-Site` (`cross-site`). Clients
that are not browsers send neither, and are not concerned; the dashboard is this origin.

Not closed here: a page whose name is rebound to 127.0.0.1 (DNS rebinding) is its own origin
to the browser, so what it sends passes; refusing a `Host` that is not this machine's would
close that too (docs/security.md says what to do meanwhile: tokens).

With tokens nothing here applies: a browser attaches no bearer token by itself, so a page can
make it send nothing a token allows.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from runyard.api.middleware.answer import problem_body, send_problem
from runyard.auth import Authenticator

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def refusal(scope: Scope) -> tuple[str, str] | None:
    """(header, why) if this request is one a page on another site may not make, else None."""
    if scope["type"] == "http" and scope["method"] not in CHANGES:
        return None
    host = origin = fetch_site = None
    for name, value in scope["headers"]:
        if name == b"host":
            host = value.decode("latin-1")
        elif name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"sec-fetch-site":
            fetch_site = value.decode("latin-1")
    if fetch_site == "cross-site":
        return "Sec-Fetch-Site", "a page on another site may not change anything here"
    if origin is not None and (urlsplit(origin).netloc.lower() or origin) != (host or "").lower():
        return "Origin", (
            f"{origin!r} is another origin than this server's: a page there may "
            "not change anything here, nor open its WebSockets"
        )
    return None


class CrossSiteGuard:
    def __init__(self, app: ASGIApp, *, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth  # tokens may come with a reload: asked per request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self.auth.enabled:
            why = refusal(scope)
            if why is not None:
                header, detail = why
                title, slug = "Cross-site request refused", "cross-site"
                if scope["type"] == "websocket":
                    body = problem_body(403, title, slug, detail, f"header.{header}")
                    await _refuse_websocket(scope, receive, send, body)
                else:
                    await send_problem(send, 403, title, slug, detail, field=f"header.{header}")
                return
        await self.app(scope, receive, send)


async def _refuse_websocket(scope: Scope, receive: Receive, send: Send, body: bytes) -> None:
    """Refused before the handshake is accepted: the problem as its HTTP answer, where the
    server can send one (uvicorn can), else a close, which it answers as a bare 403."""
    if (await receive())["type"] != "websocket.connect":
        return
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({
        "type": "websocket.http.response.start", "status": 403,
        "headers": [(b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode())],
    })  # fmt: skip
    await send({"type": "websocket.http.response.body", "body": body})
