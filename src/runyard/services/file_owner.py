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


async def owner_elsewhere(
    store: Store, run_id: str, me: str, now: float, attempt: int | None = None
) -> ServerInfo | None:
    """The live server holding the run's files, or None when they are here (or the run never
    started, or does not exist: the local handler gives the right answer then). `attempt`:
    the files of that attempt, where it ran (its log: the run's latest attempt may have run
    elsewhere, and the log of an earlier one was asked of that server, answered empty, a
    probe); one the run does not have is the latest's, whose server answers its 404."""
    attempts = await store.get_attempts(run_id)
    ran = next((a for a in attempts if a.number == attempt), None) if attempt else None
    if ran is None:
        ran = attempts[-1] if attempts else None
    if ran is None or ran.host == me:
        return None
    host = ran.host
    for server in await store.live_servers(now):
        if server.id == host:
            return server
    raise OwnerUnavailableError(
        f"run {run_id} ran on server {host!r}, which is not in the cluster now; its logs and "
        "artifacts are there",
        retry_after_s=5,
    )
