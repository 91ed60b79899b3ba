"""Request dependencies: each route asks for the narrow services it uses, typed.

The one place in `api/` that knows where those services live (the runtime the app was
created with, and what `create_app` keeps on `app.state`); routes never see `Runtime`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from runyard.auth import Authenticator, RelaySigner
from runyard.config import Settings
from runyard.jobs import JobRegistry
from runyard.metrics import Metrics
from runyard.models import ServerInfo
from runyard.runtime import Runtime
from runyard.scheduling.scheduler import Scheduler
from runyard.services.artifact_listing import ListingPool
from runyard.services.batches import BatchService
from runyard.services.file_owner import owner_elsewhere
from runyard.services.health import HealthMonitor
from runyard.services.peers import Peers
from runyard.services.runs import RunService
from runyard.services.uploads import Uploads
from runyard.services.uploads.expiry import UploadExpiry
from runyard.streams.feed import RunFeed
from runyard.streams.follow import EventItem, LogItem, follow_events, follow_log
from runyard.streams.hub import StreamHub

# -- what create_app keeps on app.state (also read by middleware and exception handlers) --


def runtime_of(conn: HTTPConnection) -> Runtime:
    runtime: Runtime = conn.app.state.runtime
    return runtime


def relay_signer(conn: HTTPConnection) -> RelaySigner:
    signer: RelaySigner = conn.app.state.relay_signer
    return signer


def relay_peers(conn: HTTPConnection) -> Peers:
    """The pools that relay to the other members (only a cluster's member has them, and only
    a cluster relays: runtime.py)."""
    peers = runtime_of(conn).relay_peers
    if peers is None:
        raise RuntimeError("a relay on a server that is not a cluster's member")
    return peers


async def _relay_signer(conn: HTTPConnection) -> RelaySigner:
    return relay_signer(conn)


async def _artifact_pool(conn: HTTPConnection) -> ListingPool:
    pool: ListingPool = conn.app.state.artifact_pool
    return pool


# -- services: resolvers are async, since FastAPI runs a plain `def` dependency in a thread --


async def _settings(conn: HTTPConnection) -> Settings:
    return runtime_of(conn).settings


async def _auth(conn: HTTPConnection) -> Authenticator:
    return runtime_of(conn).auth


async def _uploads(conn: HTTPConnection) -> Uploads:
    return runtime_of(conn).uploads


async def _upload_expiry(conn: HTTPConnection) -> UploadExpiry:
    return runtime_of(conn).upload_expiry


async def _runs(conn: HTTPConnection) -> RunService:
    return runtime_of(conn).runs


async def _batches(conn: HTTPConnection) -> BatchService:
    return runtime_of(conn).batches


async def _scheduler(conn: HTTPConnection) -> Scheduler:
    return runtime_of(conn).scheduler


async def _registry(conn: HTTPConnection) -> JobRegistry:
    return runtime_of(conn).registry


async def _health(conn: HTTPConnection) -> HealthMonitor:
    return runtime_of(conn).health


async def _hub(conn: HTTPConnection) -> StreamHub:
    return runtime_of(conn).hub


async def _feed(conn: HTTPConnection) -> RunFeed:
    return runtime_of(conn).hub.feed


async def _metrics(conn: HTTPConnection) -> Metrics:
    return runtime_of(conn).metrics


GaugeRefresh = Callable[[], Awaitable[None]]


async def _gauges(conn: HTTPConnection) -> GaugeRefresh:
    return runtime_of(conn).refresh_gauges


WorkspaceOf = Callable[[str], Path]


async def _workspace_of(conn: HTTPConnection) -> WorkspaceOf:
    """Where a run's program wrote its files (on this server)."""
    paths = runtime_of(conn).executor.paths
    return lambda run_id: paths(run_id).workspace


OwnerOf = Callable[[str, int | None], Awaitable[ServerInfo | None]]


async def _owner_of(conn: HTTPConnection) -> OwnerOf:
    """The live server holding a run's files (of attempt N, if given), or None when here."""
    rt = runtime_of(conn)

    async def owner(run_id: str, attempt: int | None) -> ServerInfo | None:
        me, now = rt.settings.server_id, rt.clock.now()
        return await owner_elsewhere(rt.store, run_id, me, now, attempt)

    return owner


LogFollower = Callable[[str, int | None, int], AsyncIterator[LogItem]]
EventFollower = Callable[[str, int], AsyncIterator[EventItem]]


async def _log_follower(conn: HTTPConnection) -> LogFollower:
    """follow_log(run_id, attempt, offset) on this server's hub and store."""
    rt = runtime_of(conn)
    return lambda run_id, attempt, offset: follow_log(rt.hub, rt.store, run_id, attempt, offset)


async def _event_follower(conn: HTTPConnection) -> EventFollower:
    """follow_events(run_id, after) on this server's hub and store."""
    rt = runtime_of(conn)
    return lambda run_id, after: follow_events(rt.hub, rt.store, run_id, after)


@dataclass(frozen=True, slots=True)
class ServerState:
    """What /v1/status reports of the running parts, read when asked."""

    started_at: float
    store_kind: str
    supervisor_connected: bool
    active: int
    running_by_job: dict[str, int]
    watchers: int
    notify: str
    tailers: int
    draining: bool
    slurm: dict[str, object] | None = None  # jobs in flight by Slurm state, the last poll
    file_audit: dict[str, object] | None = None  # what the run directories know and it not


async def _server_state(conn: HTTPConnection) -> ServerState:
    rt = runtime_of(conn)
    return ServerState(
        started_at=rt.started_at, store_kind=type(rt.store).__name__,
        supervisor_connected=rt.executor.healthy, active=rt.slots.active,
        running_by_job=dict(rt.slots.running), watchers=rt.hub.watchers,
        notify=rt.hub.notifier.mode, tailers=len(rt.hub.tailers), draining=rt.draining,
        slurm=rt.slurm.status() if rt.slurm is not None else None,
        file_audit=rt.file_audit.state.as_dict() if rt.file_audit.enabled else None,
    )  # fmt: skip


SettingsDep = Annotated[Settings, Depends(_settings)]
AuthDep = Annotated[Authenticator, Depends(_auth)]
RelaySignerDep = Annotated[RelaySigner, Depends(_relay_signer)]
RunsDep = Annotated[RunService, Depends(_runs)]
UploadsDep = Annotated[Uploads, Depends(_uploads)]
UploadExpiryDep = Annotated[UploadExpiry, Depends(_upload_expiry)]
BatchesDep = Annotated[BatchService, Depends(_batches)]
SchedulerDep = Annotated[Scheduler, Depends(_scheduler)]
RegistryDep = Annotated[JobRegistry, Depends(_registry)]
HealthDep = Annotated[HealthMonitor, Depends(_health)]
HubDep = Annotated[StreamHub, Depends(_hub)]
FeedDep = Annotated[RunFeed, Depends(_feed)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
GaugesDep = Annotated[GaugeRefresh, Depends(_gauges)]
ArtifactPoolDep = Annotated[ListingPool, Depends(_artifact_pool)]
WorkspaceDep = Annotated[WorkspaceOf, Depends(_workspace_of)]
OwnerOfDep = Annotated[OwnerOf, Depends(_owner_of)]
LogFollowerDep = Annotated[LogFollower, Depends(_log_follower)]
EventFollowerDep = Annotated[EventFollower, Depends(_event_follower)]
ServerStateDep = Annotated[ServerState, Depends(_server_state)]
