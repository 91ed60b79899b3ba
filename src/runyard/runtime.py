"""The composition root: store, jobs, executor, the owners of a run's life, streams, scheduler
and services — each built once with what it needs, started and stopped together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from runyard import failpoints
from runyard.auth import Authenticator, RelaySigner, load_tokens
from runyard.clock import Clock, SystemClock
from runyard.config import Settings
from runyard.data_dir import instance_of
from runyard.errors import (
    ServerIdTakenError,
    StorageFullError,
    StorageIOError,
    StoreBusyError,
)
from runyard.execution.base import Executor, ExecutorUnavailableError
from runyard.execution.executor import LocalExecutor
from runyard.execution.routing import RoutedExecutor
from runyard.execution.sandbox_probe import SandboxProbe
from runyard.execution.slurm.commands import SlurmCommands
from runyard.execution.slurm.executor import SlurmExecutor
from runyard.jobs import JobRegistry
from runyard.jobs.params import JsonCeiling
from runyard.jobs.sandbox import SandboxPolicy
from runyard.metrics import Metrics
from runyard.mounts import record_anchor
from runyard.scheduling.file_params import named_by
from runyard.scheduling.scheduler import Scheduler
from runyard.services.attempts import Attempts
from runyard.services.batches import BatchService
from runyard.services.diskspace import DiskGuard
from runyard.services.dispatch import Dispatcher
from runyard.services.file_audit import FileAuditor
from runyard.services.health import HealthMonitor, HealthSources
from runyard.services.lease import Lease
from runyard.services.lifecycle import Lifecycle
from runyard.services.membership import Membership
from runyard.services.observe import transition_recorder
from runyard.services.peers import Peers
from runyard.services.recovery import Reconciler
from runyard.services.removal import TRASH, Removal
from runyard.services.retention import Retention
from runyard.services.runs import RunService
from runyard.services.slots import Slots
from runyard.services.transitions import Transitions
from runyard.services.uploads import UploadExpiry, Uploads
from runyard.services.uploads.fetch import InputFetcher
from runyard.services.waiters import EndWaiters, FinishRate
from runyard.services.wakeup import QueueWakeup, Wakeup
from runyard.store import Store
from runyard.store.sqlite import SQLiteStore
from runyard.streams.hub import StreamHub, stream_grace_s

log = structlog.get_logger(__name__)


def _executor(settings: Settings, data_dir: Path) -> Executor:
    """The supervisor; with a Slurm shared directory, Slurm beside it (run directories there)."""
    jobs_dir = settings.jobs_dir.resolve()
    shared = settings.slurm_shared_dir.resolve() if settings.slurm_shared_dir else None
    local = LocalExecutor(
        data_dir, jobs_dir, fsync=settings.fsync, request_timeout_s=settings.supervisor_timeout_s,
        stopped_grace_s=settings.supervisor_stopped_grace_s,
        runs_dir=shared / "runs" if shared else None,
    )  # fmt: skip
    if shared is None:
        return local
    slurm = SlurmExecutor(
        shared / "runs", jobs_dir, SlurmCommands(submit_per_s=settings.slurm_submit_per_s),
        server_id=settings.server_id, poll_s=settings.slurm_poll_s,
        max_in_flight=settings.slurm_max_in_flight, exit_grace_s=settings.slurm_exit_grace_s,
        uploads_dir=data_dir / "uploads",
    )  # fmt: skip
    return RoutedExecutor(local, slurm)


class StartRefusedError(Exception):
    """The server may not start (its id is another live server's): said in one line."""


class Runtime:
    """Builds every collaborator once, in dependency order, and passes each what it uses.

    Who hears what is decided here and nowhere else: transition subscribers are given to
    `Transitions`; wake-ups (the dispatcher's queue, health, reconcile) are built first so
    that who gives one needs no reference to who waits on it."""

    # what else waits on a client, told to stop at shutdown (the app's body reads)
    at_shutdown: list[Callable[[], None]]
    _opened = False  # `open` done: the store open, this server joined

    def __init__(
        self, settings: Settings, clock: Clock | None = None, executor: Executor | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        data_dir = settings.data_dir.resolve()
        self.metrics = Metrics()
        self.auth = Authenticator(
            load_tokens(settings.tokens_file), required=settings.tokens_file is not None
        )
        self.started_at = time.time()
        failpoints.watch(data_dir)  # tests only: nothing unless RUNYARD_FAILPOINTS is set
        self.store = self._store(settings, data_dir)
        clustered = not isinstance(self.store, SQLiteStore)
        shared = settings.slurm_shared_dir.resolve() if settings.slurm_shared_dir else None
        self.registry = JobRegistry(
            settings.jobs_dir.resolve(), settings.jobs_refresh_s,
            JsonCeiling(settings.json_depth_ceiling, settings.json_keys_ceiling),
            SandboxPolicy(forbidden=(data_dir, *([shared] if shared else [])),
                          required=settings.require_sandbox),
        )  # fmt: skip
        self.executor: Executor = executor or _executor(settings, data_dir)
        self.slurm = self.executor.slurm if isinstance(self.executor, RoutedExecutor) else None
        queue, health_wake, reconcile_wake = QueueWakeup(), Wakeup(), Wakeup()
        self.hub = StreamHub(
            self.store, self.executor.paths, max_buffer_bytes=settings.stream_buffer_kb * 1024,
            # another host's writes to a shared filesystem never reach inotify: poll there
            inotify=settings.slurm_shared_dir is None,
        )  # fmt: skip
        self.waiters, self.finish_rate, self.at_shutdown = EndWaiters(), FinishRate(), []
        self.scheduler = Scheduler(
            self.store, self.registry, queue, self.clock, published=health_wake,
            recheck_s=settings.lease_s / 3 if clustered else None,
            min_interval_s=settings.schedule_min_interval_s, max_schedules=settings.max_schedules,
            server_id=settings.server_id, life=self._life if clustered else None,
        )  # fmt: skip
        self.transitions = Transitions([
            self.finish_rate.on_transition,
            self.waiters.on_transition,
            self.hub.on_transition,
            transition_recorder(self.metrics),
            lambda run, previous: reconcile_wake.set(),  # a sign the store works again
            self.scheduler.on_transition,
            lambda run, previous: health_wake.set(),
        ])  # fmt: skip
        self.slots = Slots(settings.capacity)
        self.lease = Lease(renewed=queue)
        self.attempts = Attempts(
            self.store, self.executor, self.slots, self.transitions, self.hub, queue,
            self.lease, self.clock, host=settings.server_id,
        )  # fmt: skip
        quota = settings.max_uploads_mb
        self.uploads = Uploads(
            data_dir, settings.max_upload_mb * 2**20, quota * 2**20 if quota else None,
            fsync=settings.fsync, min_free_bytes=settings.min_free_mb * 2**20,
        )  # fmt: skip
        # A cluster's member fetches the uploads of runs it claims from the one holding them,
        # and relays requests about files another member holds (api/proxy.py). Made here,
        # before the event loop runs (a client loads its TLS context): a server on its own
        # never imports httpx at all.
        self._fetch_peers: Peers | None = None
        self.relay_peers: Peers | None = None
        fetcher = None
        if clustered:
            import httpx

            self._fetch_peers = Peers(httpx.Timeout(30.0, connect=5.0), per_member=16)
            # A relayed stream is long, but the owner sends something at least every
            # heartbeat: one silent for two of them (its headers included) is stalled.
            stalled_s = 2 * settings.heartbeat_s + 5.0
            self.relay_peers = Peers(
                httpx.Timeout(connect=5.0, read=stalled_s, write=30.0, pool=5.0), per_member=256
            )
            signer = RelaySigner(settings.cluster_secret, settings.server_id)
            fetcher = InputFetcher(self.uploads, self.store, self.clock, signer, self._fetch_peers)
        self.dispatcher = Dispatcher(
            self.store, self.registry, self.executor, self.slots, self.attempts, queue,
            self.lease, self.clock, host=settings.server_id, inputs=fetcher,
        )  # fmt: skip
        # reconcile passes, one at a time; a failed one is retried until it succeeds
        self.reconciler = Reconciler(self.attempts, poked=reconcile_wake)
        self.attempts.needs_reconcile = self.reconciler.needed
        reconciler, registry = self.reconciler, self.registry
        self.sandbox_probe = SandboxProbe(
            lambda: settings.require_sandbox or registry.sandboxed, settings.sandbox_check_s
        )
        self.disk = DiskGuard(data_dir, settings.min_free_mb * 2**20)
        self.file_audit = FileAuditor(self.store, data_dir / "runs", enabled=not clustered)
        self.health = HealthMonitor(
            HealthSources(
                store=self.store, executor=self.executor, slots=self.slots, hub=self.hub,
                data_dir=data_dir, reconcile=lambda: reconciler.state,
                scheduler=self.scheduler.snapshot_dict, sandbox=self.sandbox_probe.problem,
                lease=lambda: self.lease.token, disk=self.disk,
                lease_problem=self._lease_problem, jobs_dir=registry.directory,
            ),
            capacity=settings.capacity, wake=health_wake,
        )  # fmt: skip
        removal = Removal(self.store, self.executor)  # a request's deletes and retention's
        self.runs = RunService(
            self.store, self.registry, self.executor, self.attempts, self.transitions, queue,
            self.clock, waiters=self.waiters, finish_rate=self.finish_rate,
            progress=self.hub.refresh_progress, announce=self._announce,
            max_queue=settings.max_queue, disk=self.disk, uploads=self.uploads,
            fetch_upload=fetcher.fetch if fetcher is not None else None, removal=removal,
            claiming=lambda: self.dispatcher.claiming,
        )  # fmt: skip
        self.scheduler.files = self.runs  # a schedule's file params, checked as a submit's
        self.batches = BatchService(
            self.store,
            self.registry,
            self.runs,
            self.clock,
            settings.max_batch,
            settings.max_batch_mb * 2**20,
            local_store=isinstance(self.store, SQLiteStore),
        )
        self.retention = Retention(
            self.store, removal, self.clock,
            default_s=settings.retention_s, interval_s=settings.retention_interval_s,
            server_id=settings.server_id, announce=self._announce,
        )  # fmt: skip
        self.upload_expiry = UploadExpiry(
            self.uploads,
            self._run_exists,
            ttl_s=settings.upload_ttl_s,
            pinned=lambda: named_by(self.scheduler.schedules.values()),
            pins=self.scheduler.pins,
        )
        self.membership = Membership(
            self.store, self.attempts, self.lease, self.clock, server_id=settings.server_id,
            url=settings.url, capacity=settings.capacity, lease_s=settings.lease_s,
            reap_margin_s=settings.reap_margin_s,
            # self-fencing only in a cluster: a lone SQLite server's programs are never stopped
            holder=self.executor if clustered else None,
            # a lapsed lease replaced: reconcile what we run. The new lease lets the dispatcher
            # claim at once: what it launched meanwhile is its own (being spawned, it is not
            # yet listed by the supervisor, and was taken for never started and killed)
            rejoined=lambda: self.reconciler.run(skip_own=True),
        )  # fmt: skip
        self.lifecycle = Lifecycle(
            self.store, self.executor, self.attempts, self.dispatcher, self.slots,
            self.reconciler, self.runs, self.health, self.hub, self.metrics,
            server_id=settings.server_id, drain_timeout_s=settings.drain_timeout_s,
            ended_elsewhere=[self.waiters.ended, self.scheduler.ended_elsewhere],
        )  # fmt: skip
        self.loop: asyncio.AbstractEventLoop | None = None  # set by start (signal handlers)

    @property
    def draining(self) -> bool:
        return self.lifecycle.draining

    async def open(self) -> None:
        """The data directory, the store and this server's place in the cluster: what may
        refuse the start (StartRefusedError, the store closed again). Before the server
        listens (cli/serve.py), so that a refusal is its one line, not a traceback."""
        if self._opened:
            return
        self.loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.settings.data_dir.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(self._anchor_runs)  # before any program of this life runs
        await self.store.open()
        await self.registry.snapshot()
        if self.membership.holder is not None:  # a cluster: one server per id at a time
            self.membership.instance = await asyncio.to_thread(instance_of, self.settings.data_dir)
        try:
            await self.membership.join()
        except ServerIdTakenError as exc:
            log.error("refusing_to_start", reason=str(exc))  # noqa: TRY400  it says it all
            await self.store.close()
            raise StartRefusedError(str(exc)) from None
        except (StorageFullError, StorageIOError, StoreBusyError) as exc:
            # a full or failing disk: serve what can be read, claim nothing (no lease), say so
            # in readiness (the store's check), and join at the next heartbeat
            log.error("join_failed", error=str(exc))  # noqa: TRY400  its cause says it all
        self._opened = True

    async def start(self) -> None:
        await self.open()
        await self.store.listen({
            "runyard_queue": lambda _: self.dispatcher.queue.set(),
            "runyard_run": self.lifecycle.run_changed_elsewhere,
            "runyard_schedules": lambda _: self.scheduler.changed_elsewhere(),
            "runyard_cancel": self.attempts.cancel_heard,
        })  # fmt: skip
        self.hub.start()
        try:
            await self.executor.start(self.lifecycle.events)
        except ExecutorUnavailableError as exc:
            # paused until reached, then a reconcile pass before any spawn (lifecycle.py)
            self.lifecycle.unreachable_at_start(exc)
        await self.reconciler.run()  # never raises: one run's damage cannot stop the start
        await self.dispatcher.start()
        self.membership.start()
        await self.scheduler.start()
        self.retention.start()
        try:
            await asyncio.to_thread(self.uploads.prepare)
        except OSError as exc:  # damaged or unwritable: uploads answer errors, the rest serves
            log.warning("uploads_not_prepared", error=str(exc))
        self.upload_expiry.start()
        await self.health.start()
        self.file_audit.start()

    def _anchor_runs(self) -> None:
        """The mount the runs' directory is on, recorded: every check of a run's files is
        anchored to it (mounts.py)."""
        runs = self.executor.paths(TRASH).root.parent
        try:
            runs.mkdir(exist_ok=True)
            record_anchor(runs)
        except OSError as exc:  # data_dir.py's readiness names a damaged one
            log.warning("runs_dir_not_anchored", path=str(runs), error=str(exc))

    def _store(self, settings: Settings, data_dir: Path) -> Store:
        if settings.on_postgres and settings.database_url is not None:
            from runyard.store.postgres import PostgresStore

            return PostgresStore(settings.database_url)
        return SQLiteStore(
            data_dir / "runyard.db",
            synchronous="FULL" if settings.fsync else "NORMAL",
            busy_timeout_ms=settings.db_busy_timeout_ms,
            observe=lambda op, s: self.metrics.child(self.metrics.store_latency, op).observe(s),
        )

    async def _run_exists(self, run_id: str) -> bool:
        return await self.store.get_run(run_id) is not None

    async def refresh_gauges(self) -> None:
        """Point-in-time gauges, set when scraped."""
        await self.lifecycle.refresh_gauges()

    def begin_shutdown(self) -> None:
        """Stop admitting at once (submissions get 503); called from the signal handler."""
        self.lifecycle.begin_shutdown()

    def release_waiters(self) -> None:
        """Before connections close: `Prefer: wait` requests answer with their run as it is,
        and what else waits on a client (`at_shutdown`) stops waiting."""
        self.waiters.release_all()
        for stop_waiting in self.at_shutdown:
            stop_waiting()

    async def close_streams(self) -> None:
        """Before connections close: every stream sends its `shutdown` event and ends."""
        await self.hub.close_streams(stream_grace_s(self.settings.shutdown_timeout_s))

    async def drain(self) -> None:
        """Start nothing new; wait for running programs up to drain_timeout_s, then cancel
        what still runs and wait for it to end (its kill grace). Queued runs stay queued."""
        await self.lifecycle.drain()

    async def stop(self) -> None:
        self.begin_shutdown()
        await self.hub.close()
        await self.health.stop()
        await self.retention.stop()
        await self.upload_expiry.stop()
        await self.membership.stop()
        await self.scheduler.stop()
        await self.reconciler.stop()
        await self.file_audit.stop()
        await self.dispatcher.stop()
        await self.executor.stop()
        await self.lifecycle.stop()
        await self.attempts.stop()
        await self.attempts.starts_written()  # those in flight, before the store closes
        await self.store.close()
        for peers in (self._fetch_peers, self.relay_peers):
            if peers is not None:
                await peers.aclose()

    def _lease_problem(self) -> str | None:
        if self.membership.taken_over:
            return (
                "taken over: another process registered this server id (a replacement or a "
                "copy); it claims nothing, and rejoins once that one's lease lapses"
            )
        if self.lease.lapsed(self.clock.now()):
            return "lapsed: its heartbeat has not renewed it; it claims nothing"
        return None

    def _life(self) -> str | None:
        """This server's life in the cluster (its lease token) while its lease holds."""
        return None if self.lease.lapsed(self.clock.now()) else self.lease.token

    def _announce(self, kind: str, data: dict[str, Any]) -> None:
        self.hub.feed.offer(kind, data)
        if kind in ("submitted", "batch"):  # /health counts them before the answer leaves
            self.health.submitted(int(data.get("size", 1)))
