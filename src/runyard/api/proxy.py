"""Forwarding a request about a run's files to the server that holds them.

A route that reads logs or artifacts declares `ON_OWNER` after its role guard: once the
caller is authorised here, the request goes on to the owning server with the cluster's
internal credential, and its answer — a file, a byte range, a live SSE stream — is relayed
as it comes. A forwarded request is always served where it lands, so nothing loops.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import Depends, FastAPI, Request
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from runyard.models import ServerInfo
from runyard.services.placement import OwnerUnavailableError, owner_elsewhere

FORWARDED = "x-runyard-forwarded-by"
# what a relayed request keeps of the caller's headers (never its credential)
PASS_REQUEST = ("accept", "range", "last-event-id", "if-range", "if-none-match", "x-request-id")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "content-length", "server", "date"}  # fmt: skip


class ForwardToOwner(Exception):
    def __init__(self, server: ServerInfo) -> None:
        super().__init__(server.id)
        self.server = server


async def _on_owner(request: Request, run_id: str) -> None:
    if FORWARDED in request.headers:
        return  # relayed to us: the files are here
    rt = request.app.state.runtime
    owner = await owner_elsewhere(rt.store, run_id, rt.settings.server_id, rt.clock.now())
    if owner is not None:
        raise ForwardToOwner(owner)


async def _on_owner_if_alive(request: Request, run_id: str) -> None:
    """Events are in the store: the owner tails progress live, but if it is gone the
    recorded events are served here."""
    with contextlib.suppress(OwnerUnavailableError):
        await _on_owner(request, run_id)


ON_OWNER = Depends(_on_owner)
ON_OWNER_IF_ALIVE = Depends(_on_owner_if_alive)


async def _relay(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ForwardToOwner)  # noqa: S101  registered for this type only
    rt = request.app.state.runtime
    client: httpx.AsyncClient = request.app.state.cluster_client
    headers = {k: v for k, v in request.headers.items() if k in PASS_REQUEST}
    headers[FORWARDED] = rt.settings.server_id
    if rt.settings.cluster_secret:
        headers["authorization"] = f"Bearer {rt.settings.cluster_secret}"
    url = f"{exc.server.url}{request.url.path}"
    upstream = await client.send(
        client.build_request(request.method, url, params=request.query_params, headers=headers),
        stream=True,
    )

    async def body() -> AsyncIterator[bytes]:
        async for chunk in upstream.aiter_raw():
            yield chunk

    kept = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
    kept["x-runyard-served-by"] = exc.server.id
    return StreamingResponse(
        body(), status_code=upstream.status_code, headers=kept,
        background=BackgroundTask(upstream.aclose),
    )  # fmt: skip


def install(app: FastAPI) -> None:
    # streams are long: no read timeout; connecting to a live member is quick or it is gone
    app.state.cluster_client = httpx.AsyncClient(
        timeout=httpx.Timeout(connect=5.0, read=None, write=30.0, pool=5.0)
    )
    app.add_exception_handler(ForwardToOwner, _relay)
