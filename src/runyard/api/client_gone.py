"""Hearing that a client has left, and cutting a connection whose answer cannot be whole."""

from __future__ import annotations

from starlette.types import Receive, Scope

ABORT_EXTENSION = "runyard.abort"  # the transport's abort, given by cli/header_timeout.py


async def client_gone(receive: Receive) -> None:
    """Returns once the client has left: what `receive` gives after a body read whole (a
    request without one included), as long as the connection is open."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def cut(scope: Scope, receive: Receive, *, reset: bool = False) -> bool:
    """Cut the connection of an answer under way that cannot be completed (its source fell
    silent, or gave less than was announced): the client sees it broken, never ended as if
    whole. `reset`, for a client that does not read: nothing it was sent is owed it any more
    (cli/reset.py); else what it was sent reaches it first. Returns once it is gone; False, at
    once, on a server that gives no way to (the caller raises, which cuts it too, with a
    traceback in the log)."""
    way = "reset" if reset else "abort"
    abort = scope.get("extensions", {}).get(ABORT_EXTENSION, {}).get(way)
    if abort is None:
        return False
    abort()
    await client_gone(receive)
    return True
