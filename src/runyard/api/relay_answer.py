"""The owning server's answer to a relayed request, as it comes: its head whole within the
relay's read timeout, then its body passed on, its connection closed however this ends."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import structlog
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from runyard.api.client_gone import client_gone, cut

if TYPE_CHECKING:
    import httpx

log = structlog.get_logger("runyard.api.proxy")  # its events are the relay's


async def owners_head(
    sending: Coroutine[Any, Any, httpx.Response], receive: Receive, head_s: float | None
) -> httpx.Response | None:
    """The owner's answer (its headers), or None when the caller left before it came: the
    request to the owner is then called off, its connection closed, not left to the deadline.
    The head comes whole within `head_s` (httpx's timeout is per read: an owner sending it a
    byte at a time held the caller, and this request, for as long as it trickled)."""
    answer = asyncio.ensure_future(sending)
    gone = asyncio.ensure_future(client_gone(receive))
    try:
        await asyncio.wait((answer, gone), timeout=head_s, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # this server is stopping
        answer.cancel()
        if answer.done() and not answer.cancelled() and answer.exception() is None:
            await answer.result().aclose()
        raise
    finally:
        left = gone.done()
        gone.cancel()
    if answer.done():
        return answer.result()
    answer.cancel()
    await asyncio.wait((answer,))  # its connection closed before this request ends
    if left:
        return None
    import httpx  # loaded: the request was sent with it

    raise httpx.ReadTimeout(f"its answer's head did not come whole within {head_s:g} s")


class RelayedResponse(StreamingResponse):
    """The owner's answer as it comes. Its connection is closed however this one ends: a
    client gone mid-stream included (a background task would not run then, and the owner
    would keep serving a live stream nobody reads). An owner that falls silent or goes
    mid-answer has the caller's connection cut, not the answer ended: a cut log or file must
    not pass for a whole one."""

    def __init__(self, upstream: httpx.Response, headers: dict[str, str], server: str) -> None:
        super().__init__(upstream.aiter_raw(), status_code=upstream.status_code, headers=headers)
        self.upstream = upstream
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        import httpx

        try:
            await super().__call__(scope, receive, send)
        except httpx.HTTPError as error:
            log.warning("relay_cut", server=self.server, path=scope.get("path"), error=repr(error))
            if not await cut(scope, receive):
                raise  # another server: the error cuts the connection (and is logged)
        finally:
            await self.upstream.aclose()
