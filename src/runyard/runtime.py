"""The composition root: store, jobs, executor, dispatcher, streams, scheduler and services,
wired, started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import structlog

from runyard import failpoints
from runyard.auth import Authenticator, load_tokens
from runyard.clock import Clock, SystemClock
from runyard.config import Settings
from runyard.errors import ConflictError
from runyard.execution.executor import LocalExecutor
from runyard.execution.protocol import ExitRecord, UnreadableExit
from runyard.jobs import JobRegistry
from runyard.jobs.params import JsonCeiling
from runyard.metrics import Metrics
from runyard.models import RunState
from runyard.scheduling.scheduler import Scheduler
from runyard.services.batches import BatchService
from runyard.services.diskspace import DiskGuard
from runyard.services.dispatch import Dispatcher
from runyard.services.health import HealthMonitor, HealthSources
from runyard.services.membership import Membership
from runyard.services.observe import transition_recorder
from runyard.services.recovery import Reconciler
from runyard.services.retention import Retention
from runyard.services.runs import RunService
from runyard.store import Store
from runyard.store.sqlite import SQLiteStore
from runyard.streams.hub import StreamHub, stream_grace_s

log = structlog.get_logger(__name__)


class Runtime:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        data_dir = settings.data_dir.resolve()
        self.metrics = Metrics()
        self.auth = Authenticator(load_tokens(settings.tokens_file))
        self.started_at = time.time()
        failpoints.watch(data_dir)  # tests only: nothing unless RUNYARD_FAILPOINTS is set
        self.store = self._store(settings, data_dir)
        self.registry = JobRegistry(
            settings.jobs_dir.resolve(), settings.jobs_refresh_s,
            JsonCeiling(settings.json_depth_ceiling, settings.json_keys_ceiling),
        )  # fmt: skip
        self.executor = LocalExecutor(
            data_dir,
            settings.jobs_dir.resolve(),
            self._on_exit,
            self._on_supervisor_lost,
            fsync=settings.fsync,
            request_timeout_s=settings.supervisor_timeout_s,
        )
        self.dispatcher = Dispatcher(
            self.store,
            self.executor,
            self.registry,
            capacity=settings.capacity,
            clock=self.clock,
            host=settings.server_id,
        )
        self.hub = StreamHub(
            self.store, self.executor.paths, max_buffer_bytes=settings.stream_buffer_kb * 1024
        )
        self.dispatcher.listeners.append(self.hub.on_transition)
        self.dispatcher.listeners.append(transition_recorder(self.metrics))
        self.dispatcher.on_started.append(self.hub.track)
        self.dispatcher.before_end.append(self.hub.attempt_ending)
        self.disk = DiskGuard(data_dir, settings.min_free_mb * 2**20)
        self.runs = RunService(
            self.store,
            self.registry,
            self.dispatcher,
            self.clock,
            max_queue=settings.max_queue,
            disk=self.disk,
        )
        self.runs.progress_refresher = self.hub.refresh_progress
        self.runs.announce = self._announce
        self.batches = BatchService(
            self.store, self.registry, self.runs, self.clock, settings.max_batch
        )
        self.retention = Retention(
            self.store, self.executor, self.registry, self.clock,
            default_s=settings.retention_s, interval_s=settings.retention_interval_s,
            server_id=settings.server_id,
        )  # fmt: skip
        self.membership = Membership(
            self.store, self.dispatcher, self.clock, server_id=settings.server_id,
            url=settings.url, capacity=settings.capacity, lease_s=settings.lease_s,
            reap_margin_s=settings.reap_margin_s,
            # self-fencing only in a cluster: a lone SQLite server's programs are never stopped
            holder=None if isinstance(self.store, SQLiteStore) else self.executor,
        )  # fmt: skip
        # reconcile passes, one at a time; a failed one is retried until it succeeds
        self.reconciler = Reconciler(self.dispatcher)
        self.dispatcher.listeners.append(lambda run, previous: self.reconciler.poke())
        self.membership.on_rejoined.append(self.reconciler.run)
        clustered = not isinstance(self.store, SQLiteStore)
        self.scheduler = Scheduler(
            self.store, self.registry, self.runs, self.dispatcher, self.clock,
            recheck_s=settings.lease_s / 3 if clustered else None,
            min_interval_s=settings.schedule_min_interval_s,
        )  # fmt: skip
        self.draining = False
        self.health = HealthMonitor(
            HealthSources(
                store=self.store, executor=self.executor, dispatcher=self.dispatcher,
                hub=self.hub, data_dir=data_dir, draining=lambda: self.draining,
                # lambdas on purpose: these objects are replaced as a whole on every change
                reconcile=lambda: self.reconciler.state,
                scheduler=lambda: self.scheduler.snapshot.as_dict(),  # noqa: PLW0108
            ),
            capacity=settings.capacity,
        )  # fmt: skip
        self.scheduler.on_publish.append(self.health.poke)
        self.dispatcher.listeners.append(lambda run, previous: self.health.poke())
        self.loop: asyncio.AbstractEventLoop | None = None
        self._exit_tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.settings.data_dir.mkdir, parents=True, exist_ok=True)
        await self.store.open()
        await self.registry.snapshot()
        await self.membership.join()
        await self.store.listen({
            "runyard_queue": lambda _: self.dispatcher.wake(),
            "runyard_run": self._run_changed_elsewhere,
            "runyard_schedules": lambda _: self.scheduler.changed_elsewhere(),
        })  # fmt: skip
        self.hub.start()
        await self.executor.start()
        await self.reconciler.run()  # never raises: one run's damage cannot stop the start
        await self.dispatcher.start()
        self.membership.start()
        await self.scheduler.start()
        self.retention.start()
        self.health.current = await self.health.build()  # ready before the first request
        self.health.start()

    def _store(self, settings: Settings, data_dir: Path) -> Store:
        url = settings.database_url
        if url and url.startswith(("postgresql://", "postgres://")):
            from runyard.store.postgres import PostgresStore

            return PostgresStore(url)
        return SQLiteStore(
            data_dir / "runyard.db",
            synchronous="FULL" if settings.fsync else "NORMAL",
            busy_timeout_ms=settings.db_busy_timeout_ms,
            observe=lambda op, s: self.metrics.store_latency.labels(op).observe(s),
        )

    async def refresh_gauges(self) -> None:
        """Point-in-time gauges, set when scraped."""
        m = self.metrics
        m.queued.clear()
        for job, n in (await self.store.counts_by_job(RunState.QUEUED)).items():
            m.queued.labels(job).set(n)
        m.running.clear()
        for job, n in self.dispatcher.running.items():
            m.running.labels(job).set(n)
        m.watchers.set(self.hub.watchers)
        m.lagged.set(self.hub.lagged_total + sum(t.lagged_total for t in self.hub.tailers.values()))

    def begin_shutdown(self) -> None:
        """Stop admitting at once (submissions get 503); called from the signal handler."""
        self.draining = True
        self.runs.accepting = False
        self.health.mark_draining()

    async def close_streams(self) -> None:
        """Before connections close: every stream sends its `shutdown` event and ends."""
        await self.hub.close_streams(stream_grace_s(self.settings.shutdown_timeout_s))

    async def drain(self) -> None:
        """Start nothing new; wait for running programs up to drain_timeout_s, then cancel
        what still runs and wait for it to end (its kill grace). Queued runs stay queued."""
        self.begin_shutdown()
        self.dispatcher.paused = True
        log.info("draining", active=self.dispatcher.active)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.dispatcher.idle(), self.settings.drain_timeout_s)
        for attempt in await self.store.active_attempts(self.settings.server_id):
            with contextlib.suppress(ConflictError):  # it ended meanwhile
                await self.runs.cancel(attempt.run_id)
        await self.dispatcher.idle()

    async def stop(self) -> None:
        self.begin_shutdown()
        await self.hub.close()
        await self.health.stop()
        await self.retention.stop()
        await self.membership.stop()
        await self.scheduler.stop()
        await self.reconciler.stop()
        await self.dispatcher.stop()
        await self.executor.stop()
        for task in list(self._exit_tasks):
            await task
        await self.store.close()

    def _announce(self, kind: str, data: dict[str, Any]) -> None:
        self.hub.feed.offer(kind, data)
        if kind in ("submitted", "batch"):  # /health counts them before the answer leaves
            self.health.submitted(int(data.get("size", 1)))

    def _run_changed_elsewhere(self, payload: str) -> None:
        parts = payload.split()
        if len(parts) != 3 or parts[2] == self.settings.server_id:
            return  # a resync after reconnecting, or our own change: already handled here
        run_id, state = parts[0], parts[1]
        self.hub.changed_elsewhere(run_id, state)
        if RunState(state).terminal:
            self.dispatcher.ended_elsewhere(run_id)
            self.scheduler.ended_elsewhere(run_id)

    async def _on_exit(self, record: ExitRecord | UnreadableExit) -> None:
        # Handled in its own task so the supervisor connection keeps being read meanwhile.
        task = asyncio.create_task(self._handle_exit(record))
        self._exit_tasks.add(task)
        task.add_done_callback(self._exit_tasks.discard)

    async def _handle_exit(self, record: ExitRecord | UnreadableExit) -> None:
        try:
            await self.dispatcher.attempt_exited(record)
        except Exception as exc:
            # The exit file stays on disk: a reconcile pass, retried until it works, ends it.
            log.exception("exit_handling_failed", attempt=record.key)
            self.reconciler.needed(f"the end of attempt {record.key} was not recorded ({exc})")

    async def _on_supervisor_lost(self) -> None:
        if self.draining:
            return
        log.error("supervisor_lost")
        try:
            await self.executor.start()
            await self.reconciler.run()
        except Exception:
            log.exception("supervisor_restart_failed")
        self.dispatcher.wake()
