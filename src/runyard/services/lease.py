"""This server's lease: its token, held by membership (the only writer) and read by whoever
writes an attempt's state, so a server whose lease lapsed cannot overwrite what another
decided; and, in a cluster, until when it holds, so that a server back from a pause claims
nothing before it has renewed (its supervisor would refuse to start it anyway)."""

from __future__ import annotations

from runyard.services.wakeup import Wakeup


class Lease:
    def __init__(self, renewed: Wakeup | None = None) -> None:
        self._token: str | None = None
        self._until: float | None = None
        self._renewed = renewed  # told when a lapsed lease holds again (the dispatch queue)
        # In a cluster: until when an attempt this life took over at registration, and does
        # not see run here, may still run where the life it replaced ran it (another host, a
        # paused process): that lease's end plus the reap margin, by which its supervisor has
        # fenced it. Recovery settles such an attempt only then. None: nothing to wait for.
        self.inherited_until: float | None = None

    @property
    def token(self) -> str | None:
        return self._token

    def hold(self, token: str, now: float, until: float | None = None) -> None:
        """Membership only: the lease the store just granted, and when it ends (None: no end
        is enforced here, as with a single server)."""
        was_lapsed = self.lapsed(now)
        self._token, self._until = token, until
        if was_lapsed and self._renewed is not None:
            self._renewed.set()

    def lapsed(self, now: float) -> bool:
        """Past its end; or never held yet (the server could not join: a full disk at start),
        so nothing is claimed under no lease at all."""
        return self._token is None or (self._until is not None and now >= self._until)
