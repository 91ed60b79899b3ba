"""A member's cookies are never kept by the pool that relays to it (services/peers.py): a
hostile member answering each relay with new `Set-Cookie` headers had them all sent back on
every later relay, for every caller, the jar growing without bound (a probe)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from runyard.models import ServerInfo
from runyard.services.peers import Peers

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def member() -> Iterator[tuple[str, list[str | None]]]:
    """A member that sets a new cookie on each answer, and the `Cookie` header of each ask."""
    sent: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            sent.append(self.headers.get("Cookie"))
            self.send_response(200)
            self.send_header("Set-Cookie", f"c{len(sent)}={'x' * 2000}; Max-Age=999999")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", sent
    finally:
        server.shutdown()
        server.server_close()


async def test_a_members_cookies_are_never_sent_back(member: tuple[str, list[str | None]]) -> None:
    url, sent = member
    peers = Peers(httpx.Timeout(10), per_member=4)
    info = ServerInfo(id="evil", url=url, token="t", capacity=1, started_at=0.0,  # noqa: S106
                      heartbeat_at=0.0, lease_expires_at=0.0)  # fmt: skip
    try:
        client = peers.to(info)
        for _ in range(5):
            assert (await client.get(f"{url}/v1/runs/x/logs")).status_code == 200
        assert sent == [None] * 5
        assert len(client.cookies) == 0
    finally:
        await peers.aclose()
