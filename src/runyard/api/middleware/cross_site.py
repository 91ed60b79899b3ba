"""A server without tokens answers the machine it runs on, not the web pages its browsers show.

With no tokens, loopback is the only fence, and a browser on the machine is inside it: any page
it shows could send what a browser sends across sites without asking first (a form's
multipart submit, an empty POST of a cancel, a `text/plain` upload, a WebSocket: a probe did
each). So, while authentication is off, a change (`POST`, `PUT`, `PATCH`, `DELETE`) or a
WebSocket sent by a browser from another origin is a `403` naming `header.Origin` (an `Origin`
that is not this `Host`, `null` included) or `header.Sec-Fetch-Site` (`cross-site`). Clients
that are not browsers send neither, and are not concerned; the dashboard is this origin.

A page whose name is rebound to 127.0.0.1 (DNS rebinding) is its own origin to the browser:
what it sends is same-origin, and it reads the answers. So a request a browser sends (it says
`Sec-Fetch-Site` or `Origin`; browsers today send the first on every request) must also name
this machine as its `Host` (`localhost`, a loopback address, or the address the server is
bound to), else a `403` naming `header.Host`, unless the server was bound elsewhere with
`--insecure`, whose names it cannot know. Clients that are not browsers name whatever host
they like, as ever.

With tokens nothing here applies: a browser attaches no bearer token by itself, so a page can
make it send nothing a token allows.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from runyard.api.middleware.answer import problem_body, send_problem
from runyard.auth import Authenticator

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _hostname(host: str) -> str:
    """`Host`'s name without its port (an IPv6 literal without its brackets), lower case."""
    if host.startswith("["):
        return host[1 : host.find("]")].lower() if "]" in host else ""
    return host.rpartition(":")[0].lower() if ":" in host else host.lower()


def is_local(name: str) -> bool:
    """`localhost` (RFC 6761: always this machine) or a loopback address."""
    if name in ("localhost", "localhost.") or name.endswith((".localhost", ".localhost.")):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _netloc(origin: str) -> str | None:
    """An `Origin`'s host and port, lower case; None for one that is no URL (`http://[::1`,
    which urlsplit refuses with an error: the guard answered 500)."""
    try:
        return urlsplit(origin).netloc.lower() or None
    except ValueError:
        return None


def refusal(scope: Scope, bound: str | None) -> tuple[str, str] | None:
    """(header, why) if this request is one a page on another site may not make, else None.
    `bound`: the address the server listens on when it is this machine's (else None)."""
    host = origin = fetch_site = None
    for name, value in scope["headers"]:
        if name == b"host":
            host = value.decode("latin-1")
        elif name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"sec-fetch-site":
            fetch_site = value.decode("latin-1")
    if bound is not None and (fetch_site is not None or origin is not None):
        named = _hostname(host or "")
        if not (is_local(named) or named == bound):
            return "Host", (
                f"{host!r} is not this machine: a server without tokens answers a browser only "
                "as localhost or a loopback address (a name rebound to it is a page's)"
            )
    if scope["type"] == "http" and scope["method"] not in CHANGES:
        return None
    if fetch_site == "cross-site":
        return "Sec-Fetch-Site", "a page on another site may not change anything here"
    if origin is not None and _netloc(origin) != (host or "").lower():
        return "Origin", (
            f"{origin!r} is another origin than this server's: a page there may "
            "not change anything here, nor open its WebSockets"
        )
    return None


class CrossSiteGuard:
    def __init__(self, app: ASGIApp, *, auth: Authenticator, bound: str | None) -> None:
        self.app = app
        self.auth = auth  # tokens may come with a reload: asked per request
        self.bound = bound

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self.auth.enabled:
            why = refusal(scope, self.bound)
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
