"""Hearing that a client has left."""

from __future__ import annotations

from starlette.types import Receive


async def client_gone(receive: Receive) -> None:
    """Returns once the client has left: what `receive` gives after a body read whole (a
    request without one included), as long as the connection is open."""
    while (await receive())["type"] != "http.disconnect":
        pass
