"""HTTP to the other members of a cluster: one connection pool per member.

A member that stops answering (paused, partitioned, its disk hung) holds every connection
sent to it until a deadline. With one pool for all members, a few hundred such requests
would take every connection, and requests to healthy members would wait for a free one and
fail: one member's trouble would become everyone's. Here each member has its own bounded
pool, so a stalled member only exhausts its own.
"""

from __future__ import annotations

import asyncio
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING

from runyard.models import ServerInfo

if TYPE_CHECKING:
    import ssl

    import httpx


def no_cookies() -> CookieJar:
    """A jar that keeps nothing. A member's `Set-Cookie` is dropped from what a caller gets,
    but httpx kept it in the pool's jar and sent it back on every later relay to that member,
    for every caller: a hostile member grew it without bound (a probe: a 3.6 MB `Cookie` header
    after 300 relays, the relaying server's memory 94 -> 218 MB)."""
    return CookieJar(DefaultCookiePolicy(allowed_domains=[]))


class Peers:
    def __init__(self, timeout: httpx.Timeout, per_member: int) -> None:
        import httpx  # a cluster's member only: a server on its own never loads it

        # loaded once, before the event loop runs: a client made later reuses it instead of
        # reading the CA bundle on the loop
        self._ssl: ssl.SSLContext = httpx.create_ssl_context()
        self._timeout = timeout
        self._limits = httpx.Limits(
            max_connections=per_member, max_keepalive_connections=min(per_member, 16)
        )
        self._clients: dict[str, tuple[str, httpx.AsyncClient]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def to(self, server: ServerInfo) -> httpx.AsyncClient:
        """The client whose pool serves `server` alone."""
        import httpx

        known = self._clients.get(server.id)
        if known is not None:
            url, client = known
            if url == server.url:
                return client
            # the member came back at another address: its old connections lead nowhere
            self._close_later(client)
        client = httpx.AsyncClient(
            verify=self._ssl, timeout=self._timeout, limits=self._limits, cookies=no_cookies()
        )
        self._clients[server.id] = (server.url, client)
        return client

    def _close_later(self, client: httpx.AsyncClient) -> None:
        task = asyncio.get_running_loop().create_task(client.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        clients = [client for _, client in self._clients.values()]
        self._clients.clear()
        for client in clients:
            await client.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
