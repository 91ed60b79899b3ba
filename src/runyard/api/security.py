"""Route guards: each route declares the role it needs; health endpoints need none."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import Scope

from runyard.api.deps import AuthDep, RelaySignerDep
from runyard.api.proxy import verify_relay
from runyard.auth import Authenticator, RelayClaim, RelaySigner, Role
from runyard.errors import RunyardError


class UnauthorizedError(RunyardError):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.headers = {"WWW-Authenticate": 'Bearer realm="runyard"'}


class ForbiddenError(RunyardError):
    status, title, slug = 403, "Forbidden", "forbidden"


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def authorization(headers: Headers, auth: Authenticator) -> str | None:
    """The request's one Authorization header, on a server that asks for one. Given twice it
    is refused (401): readers differ on which counts (this server took the first), so a
    proxy that checks the last and this server would not agree on who is calling."""
    if not auth.enabled:
        return None
    sent = headers.getlist("authorization")
    if len(sent) > 1:
        raise UnauthorizedError("the Authorization header is given more than once: send one")
    return sent[0] if sent else None


def check(
    auth: Authenticator, header: str | None, needed: Role, scope_state: dict[str, object]
) -> None:
    if not auth.enabled:
        return
    claim = scope_state.get("relay_claim")
    if isinstance(claim, RelayClaim) and claim.signed:
        # another server relaying a request it authorised: the caller's own role, never more
        name, role = f"{claim.principal} via {claim.origin}", claim.role
    else:
        token = _bearer(header)
        if token is None:
            raise UnauthorizedError("a bearer token is required (Authorization: Bearer TOKEN)")
        entry = auth.identify(token)
        if entry is None:
            raise UnauthorizedError("the bearer token is not valid")
        name, role = entry.name, entry.role
    scope_state["principal"] = name
    scope_state["role"] = role
    if role < needed:
        raise ForbiddenError(
            f"this needs the {needed.name.lower()} role; token {name!r} has {role.name.lower()}"
        )


def authorize(scope: Scope, auth: Authenticator, signer: RelaySigner, needed: Role) -> None:
    """The route guard: a relay claim or the bearer token must carry `needed` (raises
    401/403). For the declared routes (`require`) and the submit fast path alike."""
    verify_relay(signer, scope)  # a relay claim stands for a token
    check(auth, authorization(Headers(scope=scope), auth), needed, scope.setdefault("state", {}))


def require(needed: Role) -> Callable[[Request, Authenticator, RelaySigner], Awaitable[None]]:
    async def guard(request: Request, auth: AuthDep, signer: RelaySignerDep) -> None:
        authorize(request.scope, auth, signer, needed)

    return guard


async def websocket_token(conn: HTTPConnection) -> None:
    """A dependency of every route, first: a WebSocket's token, before any of its route's
    parameters is looked at, as the middleware checks an HTTP request's before routing
    (middleware/authenticate.py, which lets WebSockets through to their route). A handshake
    without one was told its query was wrong (422) where HTTP says 401 (a probe)."""
    if conn.scope["type"] == "websocket":
        auth: Authenticator = conn.app.state.runtime.auth
        check(auth, authorization(conn.headers, auth), Role.READ,
              conn.scope.setdefault("state", {}))  # fmt: skip


READ = Depends(require(Role.READ))
SUBMIT = Depends(require(Role.SUBMIT))
ADMIN = Depends(require(Role.ADMIN))
