"""Where a run's files are: on the server whose supervisor ran its latest attempt.

Status, events and progress live in the shared store; logs and artifacts live in the data
directory of the server that ran the attempt. Any server answers about any run by finding
that server here and forwarding to it (see api/proxy.py and docs/scale-out.md).
"""

from __future__ import annotations

from runyard.errors import UnavailableError
from runyard.models import ServerInfo
from runyard.store import Store


class OwnerUnavailableError(UnavailableError):
    title, slug = "Owner unavailable", "owner-unavailable"


async def owner_elsewhere(store: Store, run_id: str, me: str, now: float) -> ServerInfo | None:
    """The live server holding the run's files, or None when they are here (or the run never
    started, or does not exist: the local handler gives the right answer then)."""
    attempts = await store.get_attempts(run_id)
    if not attempts or attempts[-1].host == me:
        return None
    host = attempts[-1].host
    for server in await store.live_servers(now):
        if server.id == host:
            return server
    raise OwnerUnavailableError(
        f"run {run_id} ran on server {host!r}, which is not in the cluster now; its logs and "
        "artifacts are there",
        retry_after_s=5,
    )
