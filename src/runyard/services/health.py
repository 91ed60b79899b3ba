"""Health: one immutable snapshot, rebuilt off the request path and published atomically.

Every health endpoint reads the current snapshot object and nothing else, so no reader can
see a half-updated state (the counts, the checks and the scheduler state of one instant).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from runyard.background import Background
from runyard.models import RunState

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    snapshot_at: float
    active: int
    queued: int
    capacity: int
    draining: bool
    failed_checks: dict[str, str] = field(default_factory=dict)  # check -> why
    scheduler: dict[str, Any] | None = None
    streams: dict[str, Any] = field(default_factory=dict)

    @property
    def busy(self) -> bool:
        return self.active >= self.capacity

    @property
    def ready(self) -> bool:
        return not self.failed_checks


def writable(directory: Path) -> str | None:
    """Blocking: can a file be created in `directory`?"""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".ready-"):
            pass
    except OSError as exc:
        return f"the data directory is not writable: {exc.strerror}"
    return None


class HealthMonitor:
    def __init__(self, runtime: Any, interval_s: float = 1.0, min_interval_s: float = 0.1) -> None:
        self.rt = runtime
        self.interval_s = interval_s
        self.min_interval_s = min_interval_s
        self.current = HealthSnapshot(time.time(), 0, runtime.settings.capacity, 0, False,
                                      {"starting": "the server is starting"})  # fmt: skip
        self.scheduler_snapshot: Callable[[], dict[str, Any] | None] = lambda: None
        self._wake = asyncio.Event()
        self._task = Background("health")

    def start(self) -> None:
        self._task.start(self._loop())

    async def stop(self) -> None:
        await self._task.stop()

    def poke(self) -> None:
        """Something changed (a transition, a dispatch): rebuild soon."""
        self._wake.set()

    def mark_draining(self) -> None:
        """Publish at once, without I/O: the server is shutting down."""
        failed = {**self.current.failed_checks, "draining": "the server is shutting down"}
        self.current = replace(self.current, draining=True, failed_checks=failed,
                               snapshot_at=time.time())  # fmt: skip

    async def _loop(self) -> None:
        while True:
            try:
                self.current = await self.build()
            except Exception:
                log.exception("health_snapshot_failed")
            await asyncio.sleep(self.min_interval_s)  # a rate limit under churn, not a poll
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            self._wake.clear()

    async def build(self) -> HealthSnapshot:
        rt = self.rt
        failed: dict[str, str] = {}
        queued = self.current.queued
        try:
            async with asyncio.timeout(2.0):
                queued = await rt.store.count_runs(RunState.QUEUED)
        except Exception as exc:
            failed["database"] = f"the database is unreachable: {exc or type(exc).__name__}"
        if (err := await asyncio.to_thread(writable, rt.settings.data_dir)) is not None:
            failed["data_dir"] = err
        if not rt.executor.healthy:
            failed["executor"] = "not connected to the supervisor"
        if rt.draining:
            failed["draining"] = "the server is shutting down"
        d = rt.dispatcher
        return HealthSnapshot(
            snapshot_at=time.time(), active=d.active, queued=queued, capacity=d.capacity,
            draining=rt.draining, failed_checks=failed, scheduler=self.scheduler_snapshot(),
            streams={"watchers": rt.hub.watchers, "tailers": len(rt.hub.tailers),
                     "lagged_total": rt.hub.lagged_total, "notify": rt.hub.notifier.mode},
        )  # fmt: skip
