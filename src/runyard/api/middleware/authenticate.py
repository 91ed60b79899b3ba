"""Authentication before anything else: on a server with tokens, a request to the API
(`/v1/...`) without a valid credential is answered 401 before any route runs, so its body is
never read (FastAPI reads a body before it runs the route's guards). The role each route needs
is still checked by its guard (api/security.py), which this shares its check with.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from runyard.api import openai_errors
from runyard.api.middleware.answer import send_problem
from runyard.api.problems import problem
from runyard.api.proxy import verify_relay
from runyard.api.security import UnauthorizedError, authorization, check
from runyard.auth import Authenticator, RelaySigner, Role

PROTECTED = "/v1/"


class AuthenticateMiddleware:
    def __init__(self, app: ASGIApp, auth: Authenticator, signer: RelaySigner) -> None:
        self.app = app
        self.auth = auth
        self.signer = signer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # websockets read nothing before their guard accepts them; health, metrics (which
        # guards itself), the dashboard's files and the docs are public
        if scope["type"] == "http" and (scope["path"] + "/").startswith(PROTECTED):
            verify_relay(self.signer, scope)  # a server relaying for a caller: no token
            try:
                header = authorization(Headers(scope=scope), self.auth)
                check(self.auth, header, Role.READ, scope.setdefault("state", {}))
            except UnauthorizedError as exc:
                if openai_errors.applies(scope["path"]):
                    # closed after it, like send_problem's: the body is never read
                    headers = {**exc.headers, "Connection": "close"}
                    answer = openai_errors.reshape(
                        problem(401, exc.title, exc.detail, exc.slug, headers),
                        f"{scope['method']} {scope['path']}",
                    )
                    await answer(scope, receive, send)
                    return
                await send_problem(
                    send, 401, "Unauthorized", "unauthorized", exc.detail,
                    [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()],
                )  # fmt: skip
                return
        await self.app(scope, receive, send)
