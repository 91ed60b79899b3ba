"""This server's lease token: held by membership (the only writer), read by whoever writes
an attempt's state, so a server whose lease lapsed cannot overwrite what another decided."""

from __future__ import annotations


class Lease:
    def __init__(self) -> None:
        self._token: str | None = None

    @property
    def token(self) -> str | None:
        return self._token

    def hold(self, token: str) -> None:
        """Membership only: the lease the store just granted."""
        self._token = token
