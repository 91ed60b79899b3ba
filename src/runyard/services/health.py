"""Health: one immutable snapshot, rebuilt off the request path and published atomically.

Every health endpoint reads the current snapshot object and nothing else, so no reader can
see a half-updated state (the counts, the checks and the scheduler state of one instant).
Readiness checks each part that can hang or go missing: the database answers and its file is
the one opened, the store and the data directory take writes, the supervisor answers a ping
in time and reports no failing writes, bubblewrap makes a sandbox (when a job needs one), the
last reconcile succeeded, the server is not draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import structlog

from runyard import data_dir, failpoints
from runyard.background import Background
from runyard.errors import StorageFullError
from runyard.execution.base import ExecutorHealth
from runyard.models import RunState
from runyard.services.diskspace import DiskGuard
from runyard.services.wakeup import Wakeup
from runyard.store import Store
from runyard.streams.hub import StreamHub

log = structlog.get_logger(__name__)

CHECK_TIMEOUT_S = 2.0  # each check; a part slower than this is reported, not waited for
# A rebuild may take at most about this share of the time: its count of queued runs costs what
# the queue is deep (60 ms at a million), and under churn it would otherwise run ten times a
# second. A deep queue's snapshot is then rebuilt less often; this server's own submissions
# are counted into it at once all the same (`submitted`).
REBUILD_SHARE = 0.05
# ...but never longer than this: a rest hides a change of readiness for as long as it lasts
MAX_REST_S = 2.0
PROBE_BYTES = 4096  # a probe needs a real block: an empty file still fits on a full disk


class ReconcileStatus(Protocol):
    """What readiness reads of the last reconcile (services.recovery.ReconcileState)."""

    @property
    def ok(self) -> bool: ...

    @property
    def error(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    snapshot_at: float
    active: int
    queued: int
    capacity: int
    draining: bool
    failed_checks: dict[str, str] = field(default_factory=dict)  # check -> why
    scheduler: dict[str, Any] | None = None

    @property
    def busy(self) -> bool:
        return self.active >= self.capacity

    @property
    def ready(self) -> bool:
        return not self.failed_checks


class ExecutorProbe(Protocol):
    """Readiness of what runs programs (any Executor)."""

    @property
    def healthy(self) -> bool: ...

    async def health(self, timeout_s: float) -> ExecutorHealth: ...


class CapacityProbe(Protocol):
    """How full this server is (services.slots.Slots)."""

    @property
    def active(self) -> int: ...

    @property
    def capacity(self) -> int: ...


@dataclass(frozen=True, slots=True)
class HealthSources:
    """What the monitor looks at, each through a narrow probe; functions for what is
    replaced whole after construction (the reconcile state, the scheduler's snapshot)."""

    store: Store
    executor: ExecutorProbe
    slots: CapacityProbe
    hub: StreamHub
    data_dir: Path
    reconcile: Callable[[], ReconcileStatus]
    scheduler: Callable[[], dict[str, Any] | None]
    # why sandboxed jobs could not run now (execution/sandbox_probe.py), None if they can
    sandbox: Callable[[], Awaitable[str | None]] | None = None
    # this server's lease token: None until it could join (its store refused the write)
    lease: Callable[[], str | None] | None = None
    # why its lease, once held, holds no more (a cluster's heartbeat stuck, or its id taken
    # over by another process), or None: it claims nothing meanwhile, so a load balancer
    # must not send it work
    lease_problem: Callable[[], str | None] | None = None
    # free space under min_free_mb: submissions are refused (507), so it is not ready for them
    disk: DiskGuard | None = None
    # the jobs directory: while it cannot be listed no job can be submitted or started
    jobs_dir: Path | None = None


def writable(directory: Path) -> str | None:
    """Blocking: can a block be written in `directory`, the data directory, and are the
    directories made in it when needed (the runs', the uploads') directories, or absent? A
    file put in their place while the server runs fails every run or upload from then on."""
    entries = data_dir.directories(directory)
    if (why := data_dir.wrong_kind(entries, "move it aside (it is made again)")) is not None:
        return why
    try:
        failpoints.check("workspace")
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".ready-") as fh:
            fh.write(b"\0" * PROBE_BYTES)
            fh.flush()  # the write reaches the file system, so a full disk says so here
    except OSError as exc:
        return f"the data directory is not writable: {exc.strerror or exc}"
    return None


def listable(directory: Path) -> str | None:
    """Blocking: can `directory` be listed? Its first entry only: the registry reads the
    files when asked for jobs, and a directory of ten thousand of them is not read again
    each second for this. Gone, not a directory, not this server's to read, an I/O error:
    every submission would be refused and no queued run could start."""
    try:
        with os.scandir(directory) as listing:
            next(listing, None)
    except OSError as exc:
        return f"cannot read the jobs directory: {exc.strerror or exc}"
    return None


def _directories(data: Path, jobs: Path | None) -> dict[str, str]:
    """Blocking: the directories' checks, in one trip to a thread."""
    failed = {}
    if (why := writable(data)) is not None:
        failed["data_dir"] = why
    if jobs is not None and (why := listable(jobs)) is not None:
        failed["jobs_dir"] = why
    return failed


class HealthMonitor:
    def __init__(
        self, sources: HealthSources, capacity: int, interval_s: float = 1.0,
        min_interval_s: float = 0.1, wake: Wakeup | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:  # fmt: skip
        self.sources = sources
        self._clock, self._sleep = clock, sleep
        self._count_took = 0.0  # the last count of queued runs, in seconds (what a rest is for)
        self.interval_s = interval_s
        self.min_interval_s = min_interval_s
        self._current = HealthSnapshot(time.time(), 0, 0, capacity, False,
                                       {"starting": "the server is starting"})  # fmt: skip
        # submissions not yet in `_current`, and when the last came: added as it is read
        self._uncounted = 0
        self._uncounted_at = 0.0
        self._wake = wake or Wakeup()  # set on transitions and scheduler snapshots too
        self._draining = False
        self._task = Background("health")
        self._submitted = 0  # submissions counted into `current` since start

    async def start(self) -> None:
        self.current = await self.build()  # ready before the first request
        self._task.start(self._loop())

    async def stop(self) -> None:
        await self._task.stop()

    def poke(self) -> None:
        """Something changed (a transition, a dispatch): rebuild soon."""
        self._wake.set()

    @property
    def current(self) -> HealthSnapshot:
        """The snapshot, with every submission so far counted in (a new one only if some
        came since it was last read)."""
        if self._uncounted:
            self._current = replace(
                self._current, queued=self._current.queued + self._uncounted,
                snapshot_at=self._uncounted_at,
            )  # fmt: skip
            self._uncounted = 0
        return self._current

    @current.setter
    def current(self, snap: HealthSnapshot) -> None:
        # `publish` keeps the count a rebuild may have missed submissions in (it reads
        # `current` first), and a count begun after a submission includes it
        self._current, self._uncounted = snap, 0

    def submitted(self, count: int = 1) -> None:
        """Runs were just queued: counted at once, without I/O, so `/health` read after the
        submission's answer includes them; the next rebuild recounts from the store. Read
        far less often than runs are submitted: the snapshot is made anew when read."""
        self._submitted += count
        self._uncounted += count
        self._uncounted_at = time.time()
        self._wake.set()

    def mark_draining(self) -> None:
        """Publish at once, without I/O: the server is shutting down."""
        self._draining = True
        failed = {**self.current.failed_checks, "draining": "the server is shutting down"}
        self.current = replace(self.current, draining=True, failed_checks=failed,
                               snapshot_at=time.time())  # fmt: skip

    async def _loop(self) -> None:
        while True:
            try:
                await self.publish()
            except Exception:
                log.exception("health_snapshot_failed")
            await self._sleep(self.rest_after(self._count_took))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            self._wake.clear()

    def rest_after(self, took: float) -> float:
        """How long to rest after a rebuild whose count of queued runs took `took` seconds,
        before the next may start: a rate limit under churn (not a poll), longer as counting
        costs more. Only the count: a check that waits for its timeout costs no CPU, and
        resting for it would only hide its recovery."""
        share = took * (1 - REBUILD_SHARE) / REBUILD_SHARE
        return min(MAX_REST_S, max(self.min_interval_s, share))

    async def publish(self) -> None:
        before = self._submitted
        snap = await self.build()
        if self._submitted != before:
            # a submission was counted while this count ran, which may predate it: keep the
            # count that includes it until the next rebuild (at once) settles it
            snap = replace(snap, queued=self.current.queued)
            self._wake.set()
        self.current = snap

    async def build(self) -> HealthSnapshot:
        src = self.sources
        failed: dict[str, str] = {}
        queued = self.current.queued
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                began = self._clock()
                try:
                    queued = await src.store.count_runs(RunState.QUEUED)
                finally:  # timed out too: it goes on in the store, and costs what it took
                    self._count_took = self._clock() - began
                failed.update(await src.store.health_problems())
        except Exception as exc:
            failed["database"] = f"the database is unreachable: {_says(exc)}"
        failed.update(await asyncio.to_thread(_directories, src.data_dir, src.jobs_dir))
        failed.update(await self._supervisor())
        if src.sandbox is not None and (why := await src.sandbox()) is not None:
            failed["sandbox"] = why
        if src.disk is not None:
            try:
                await src.disk.check()
            except StorageFullError as exc:
                failed["disk"] = exc.detail
        if src.lease is not None and src.lease() is None:
            failed["lease"] = "not joined: its store refused the registration (retried)"
        elif src.lease_problem is not None and (why := src.lease_problem()) is not None:
            failed["lease"] = why
        reconcile = src.reconcile()
        if not reconcile.ok:
            failed["reconcile"] = reconcile.error or "the last reconcile failed"
        if self._draining:
            failed["draining"] = "the server is shutting down"
        d = src.slots
        return HealthSnapshot(
            snapshot_at=time.time(), active=d.active, queued=queued, capacity=d.capacity,
            draining=self._draining, failed_checks=failed, scheduler=src.scheduler(),
        )  # fmt: skip

    def streams(self) -> dict[str, Any]:
        """The hub's counters as they are now, not as of the last snapshot: they cost no I/O,
        and a watcher just dropped is counted in the next answer (a snapshot up to a rebuild
        old said no watcher had lagged after one had)."""
        hub = self.sources.hub
        return {"watchers": hub.watchers, "tailers": len(hub.tailers),
                "lagged_total": hub.lagged_total, "notify": hub.notifier.mode}  # fmt: skip

    async def _supervisor(self) -> dict[str, str]:
        """The executor answers in time; its failing writes, by failpoint name."""
        executor = self.sources.executor
        if not executor.healthy:
            return {"executor": "not connected to the supervisor"}
        try:
            reply = await executor.health(CHECK_TIMEOUT_S)
        except Exception as exc:
            if "refused a ping" in str(exc):
                return {"executor": str(exc)}
            return {"executor": f"the supervisor does not answer: {_says(exc)}"}
        return {point: why[:500] for point, why in reply.write_errors.items()}


def _says(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
