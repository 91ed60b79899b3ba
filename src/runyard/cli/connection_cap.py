"""At most `max_connections` connections at once, and `per_client` of them from one address.

A connection holds a descriptor from its accept to its close, whether or not it asks for
anything. `RUNYARD_MAX_REQUESTS` bounds the requests in progress (api/middleware/request_cap.py);
a connection that sends nothing, or waits between two requests, held its socket all the same
until the header deadline or the keep-alive's end cut it, and a client opening connections
faster than those cut them took every descriptor of the server: `/health/live` unanswered,
the store's and the exit files' opens failing (EMFILE), new connections refused for all.

Past `per_client` connections from one address, a new one from it is answered at once:
`503 out-of-resources` naming the limit, `Retry-After: 1`, and closed, before anything of it
is read. At `max_connections`, the connection that has waited longest for a request (before
its first, or between two: one the header deadline or the keep-alive would close anyway) is
closed to make room, as a keep-alive's end closes it, which clients expect (once it has
waited a second: one accepted a moment ago may have its request on its way); only when none
has is the new one refused so. A kubelet's probe still gets in while one address floods the
server with idle connections. Nor do busy connections whose client takes none of its answers
keep it out: pipelined requests (`/metrics`, which no request cap holds back) left unread
kept every connection "in progress" and answered `/health/live` 503 until the stalled
readers were cut, over a minute on (a probe). Past the idle ones, a connection whose client
has taken none of what it was sent for STALLED_S is reset to make room: nothing of its
answer left the socket's queue or the transport's since it was last looked at. A slow reader
is no stalled one (a review: a download taken at 8 KB/s, paused a second, was reset).

The address is the peer's as the socket has it (`client_of`): an IPv6 one by its /64, which
one host is given whole (counted by address, a /64 was 2^64 clients); behind a proxy, every
connection comes from the proxy's, and `RUNYARD_MAX_CONNECTIONS_PER_CLIENT` is what the proxy
may hold open.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any, Protocol

import structlog
from prometheus_client import Counter

from runyard.api.middleware.request_cap import TOLD_EVERY_S, descriptor_budget

log = structlog.get_logger("runyard.http")

# A connection is closed to make room only once it has waited this long: a new one whose
# request is on its way (accepted in the same turn of the loop, not read yet) is not idle.
MIN_IDLE_S = 1.0
# A connection is reset to make room only once its client has taken nothing for this long.
STALLED_S = 2.0
STALLED_LOOKS = 8  # stalled connections looked at per new one at the cap, oldest first


def default_max_connections() -> int:
    """Half the descriptor budget: one each, and with every request at its most besides
    (`default_max_requests`, a quarter of it at three each) within the process's limit."""
    return max(32, descriptor_budget() // 2)


def default_per_client(max_connections: int) -> int:
    """Half of them: one address cannot take them all."""
    return max(1, max_connections // 2)


def client_of(peer: object) -> str:
    """Who a connection is from, as the per-client cap counts it: its IPv4 address, the /64
    of its IPv6 one (an IPv4 one mapped into IPv6 as itself), "" for a Unix socket."""
    host = peer[0] if isinstance(peer, tuple) and peer and isinstance(peer[0], str) else ""
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


class Closable(Protocol):
    def close_idle(self) -> None:
        """Close the connection, which has no request in progress."""

    def close_stalled(self) -> None:
        """Reset the connection, whose client has taken none of its answers for a while."""

    def unsent(self) -> int:
        """Bytes written to the connection that its client has not taken yet."""


class ConnectionCap:
    """The server's open connections, by peer address; shared by its connections' protocols."""

    def __init__(self, max_connections: int, per_client: int, cut: Counter | None = None) -> None:
        self.max_connections = max_connections
        self.per_client = per_client
        self.cut = cut  # /metrics: connections refused or closed to make room, by why
        self._peer: dict[object, str] = {}  # a connection's protocol: its address
        self._by_peer: dict[str, int] = {}
        # Closable -> since when it has had no request in progress; oldest first
        self._waiting: dict[Any, float] = {}
        # Closable -> (since when, bytes unsent then): writing paused, its client taking
        # nothing since that look
        self._stalled: dict[Any, tuple[float, int]] = {}
        self._refused = 0  # since the last line that said so
        self._told_at = 0.0

    def admit(self, conn: Closable, peer: str) -> str | None:
        """None if `conn`, from `peer`, may stay open; else why not (for its 503)."""
        if self._by_peer.get(peer, 0) >= self.per_client:
            return self._refuse(
                "per_client",
                f"{self.per_client} connections from your address are open, its most "
                "(RUNYARD_MAX_CONNECTIONS_PER_CLIENT); close one or try again shortly",
            )
        if len(self._peer) >= self.max_connections and not self._make_room():
            return self._refuse(
                "max_connections",
                f"the server has {self.max_connections} connections open, each with a "
                "request in progress, its most (RUNYARD_MAX_CONNECTIONS); try again shortly",
            )
        self._peer[conn] = peer
        self._by_peer[peer] = self._by_peer.get(peer, 0) + 1
        return None

    def waiting(self, conn: Closable) -> None:
        """`conn` has no request in progress: it may be closed to make room."""
        if conn in self._peer:
            self._waiting.pop(conn, None)
            self._waiting[conn] = time.monotonic()  # the newest waiter is closed last

    def working(self, conn: Closable) -> None:
        self._waiting.pop(conn, None)

    def stalled(self, conn: Closable) -> None:
        """`conn`'s client takes what it is sent slower than it is written (the transport
        paused writing): whether it takes anything at all is seen at `_make_room`."""
        if conn in self._peer and conn not in self._stalled:
            self._stalled[conn] = (time.monotonic(), conn.unsent())

    def flowing(self, conn: Closable) -> None:
        self._stalled.pop(conn, None)

    def hand_over(self, old: Closable, new: object) -> None:
        """`old`'s connection goes on under `new` (upgraded to a WebSocket): it is counted
        until `new` releases it, never closed to make room."""
        peer = self._peer.pop(old, None)
        self._waiting.pop(old, None)
        self._stalled.pop(old, None)
        if peer is not None:
            self._peer[new] = peer

    def release(self, conn: object) -> None:
        """`conn` is closed: its place is free."""
        self._waiting.pop(conn, None)
        self._stalled.pop(conn, None)
        peer = self._peer.pop(conn, None)
        if peer is None:
            return
        left = self._by_peer[peer] - 1
        if left:
            self._by_peer[peer] = left
        else:
            del self._by_peer[peer]

    def _make_room(self) -> bool:
        """An idle connection closed, else a stalled reader's reset: whether one was."""
        now = time.monotonic()
        if self._waiting:
            conn, since = next(iter(self._waiting.items()))  # oldest first: insertion order
            if now - since >= MIN_IDLE_S:
                self._made_room(conn, "made_room")
                conn.close_idle()
                return True
        for conn, (since, unsent) in list(self._stalled.items())[:STALLED_LOOKS]:
            left = conn.unsent()
            if left < unsent:  # it took some: slow, not stalled; looked at again from now
                del self._stalled[conn]
                self._stalled[conn] = (now, left)
            elif now - since >= STALLED_S:
                self._made_room(conn, "reader_stalled")
                conn.close_stalled()
                return True
        return False

    def _made_room(self, conn: Closable, why: str) -> None:
        self.release(conn)  # its descriptor goes with the close
        if self.cut is not None:
            self.cut.labels(why=why).inc()

    def _refuse(self, why: str, detail: str) -> str:
        if self.cut is not None:
            self.cut.labels(why=why).inc()
        self._refused += 1
        now = time.monotonic()
        if now - self._told_at >= TOLD_EVERY_S:
            log.warning("connections_refused_at_cap", refused=self._refused, why=why,
                        open=len(self._peer), max_connections=self.max_connections,
                        per_client=self.per_client)  # fmt: skip
            self._refused, self._told_at = 0, now
        return detail
