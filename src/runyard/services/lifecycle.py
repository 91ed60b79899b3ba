"""The server's life around its runs: the executor's reports (an exit handed to the attempts
owner, a lost supervisor reconnected and reconciled), other servers' run notifications routed
to who cares, point-in-time gauges, and drain at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import structlog

from runyard.background import TaskGroup
from runyard.bad_days import log_failure
from runyard.errors import ConflictError
from runyard.execution.base import Executor, ExecutorEvents, ExecutorUnavailableError
from runyard.execution.protocol import ExitRecord, UnreadableExit
from runyard.metrics import Metrics
from runyard.models import RunState
from runyard.services.attempts import Attempts
from runyard.services.dispatch import Dispatcher
from runyard.services.health import HealthMonitor
from runyard.services.recovery import Reconciler
from runyard.services.runs import RunService
from runyard.services.slots import Slots
from runyard.store import Store
from runyard.streams.hub import StreamHub

log = structlog.get_logger(__name__)

RECONNECT_FIRST_S = 0.5  # after a failed restart of the supervisor, doubling up to:
RECONNECT_MAX_S = 5.0


class Lifecycle:
    def __init__(
        self,
        store: Store,
        executor: Executor,
        attempts: Attempts,
        dispatcher: Dispatcher,
        slots: Slots,
        reconciler: Reconciler,
        runs: RunService,
        health: HealthMonitor,
        hub: StreamHub,
        metrics: Metrics,
        *,
        server_id: str,
        drain_timeout_s: float,
        ended_elsewhere: Sequence[Callable[[str], None]],
    ) -> None:
        self.store = store
        self.executor = executor
        self.attempts = attempts
        self.dispatcher = dispatcher
        self.slots = slots
        self.reconciler = reconciler
        self.runs = runs
        self.health = health
        self.hub = hub
        self.metrics = metrics
        self.server_id = server_id
        self.drain_timeout_s = drain_timeout_s
        self._ended_elsewhere = tuple(ended_elsewhere)  # who hears another server's run end
        self.draining = False
        self._exits = TaskGroup("attempt-exit")
        self._reconnecting: asyncio.Task[None] | None = None  # after the supervisor was lost
        self.events = ExecutorEvents(exited=self._exited, lost=self._supervisor_lost)

    # -- the executor's reports ---------------------------------------------------------------

    async def _exited(self, record: ExitRecord | UnreadableExit) -> None:
        # Handled in its own task so the executor's connection keeps being read meanwhile.
        self.attempts.end_heard(record.key)
        self._exits.start(self._record_exit(record))

    async def _record_exit(self, record: ExitRecord | UnreadableExit) -> None:
        try:
            await self.attempts.exited(record)
        except Exception as exc:
            # Kept, with its exit file if it has one: a reconcile pass, retried until it
            # works, ends it with this record.
            self.attempts.unrecorded[record.key] = record
            log_failure(log, "exit_handling_failed", exc, attempt=record.key)
            self.reconciler.needed(f"the end of attempt {record.key} was not recorded ({exc})")

    def unreachable_at_start(self, exc: Exception) -> None:
        """The executor could not be reached as the server started: the server starts all the
        same (not ready, saying why), and connects as it would after a loss. It used to exit
        (a supervisor stopped with its backlog full, or holding the lock without listening)."""
        log.error("supervisor_unreachable", error=str(exc))
        self._reconnecting = asyncio.create_task(self._reconnect(), name="supervisor-restart")

    async def _supervisor_lost(self) -> None:
        if self.draining:
            return
        log.error("supervisor_lost")
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.create_task(self._reconnect(), name="supervisor-restart")

    async def _reconnect(self) -> None:
        """Until a supervisor answers again. One killed while it starts (or that cannot start
        for a while) used to leave the server disconnected for good: never ready again, and
        every claimed run re-queued once a second, a new attempt number each time."""
        delay = RECONNECT_FIRST_S
        # Nothing is spawned on the new supervisor before the pass that settles what the old
        # one ran: that pass, listing the new one's programs first, would take an attempt
        # spawned meanwhile for one that never started (killed, and re-queued as such).
        await self.dispatcher.pause()
        try:
            while not self.draining:
                try:
                    await self.executor.reconnect()
                except ExecutorUnavailableError as exc:  # out of reach still: no fault to trace
                    log.warning("supervisor_unreachable", error=str(exc), retry_in_s=delay)
                except Exception:
                    log.exception("supervisor_restart_failed", retry_in_s=delay)
                else:
                    await self.reconciler.run()
                    if self.executor.healthy:
                        return
                    # lost again meanwhile (that loss found this task still going): once more
                    log.error("supervisor_lost_again", retry_in_s=delay)
                await asyncio.sleep(delay)  # nothing tells when a start may work: try again
                delay = min(2 * delay, RECONNECT_MAX_S)
        finally:
            if not self.draining:  # a drain keeps it paused
                self.dispatcher.resume()

    async def stop(self) -> None:
        """After the executor stopped: the ends it delivered are recorded."""
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        await self._exits.wait()

    # -- other servers ------------------------------------------------------------------------

    def run_changed_elsewhere(self, payload: str) -> None:
        if not payload:
            # the listener reconnected: what was said meanwhile is lost. Whoever follows a run
            # here reads it again. (A request waiting for a run's end answers at its deadline
            # at the latest, and a pending schedule fires at its next due time: both read the
            # run then.)
            self.hub.resync()
            return
        parts = payload.split()
        if len(parts) != 3 or parts[2] == self.server_id:
            return  # malformed, or our own change: already handled here
        run_id, state = parts[0], parts[1]
        self.hub.changed_elsewhere(run_id, state)
        if RunState(state).terminal:
            for listener in self._ended_elsewhere:
                listener(run_id)

    # -- gauges -------------------------------------------------------------------------------

    async def refresh_gauges(self) -> None:
        """Point-in-time gauges, set when scraped: every declared job's, at 0 too (a series
        that vanished at 0 left `sum(runyard_runs_queued)` with no data, not 0), and those
        of runs whose job file has gone since."""
        m = self.metrics
        # the jobs as scanned at most `refresh_s` ago (the last scan alone was often none: a
        # scrape of an idle server found no series again, a review)
        declared = dict.fromkeys((await self.runs.registry.snapshot()).jobs, 0)
        m.queued.clear()
        queued = await self.store.counts_by_job(RunState.QUEUED)
        for job, n in (declared | queued).items():
            m.queued.labels(job).set(n)
        m.running.clear()
        for job, n in (declared | self.slots.running).items():
            m.running.labels(job).set(n)
        m.watchers.set(self.hub.watchers)
        m.lagged.set(self.hub.lagged_total)

    # -- shutdown -----------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Stop admitting at once (submissions get 503); called from the signal handler."""
        self.draining = True
        if (task := self._reconnecting) is not None:
            # no new supervisor for a server that stops; thread-safe: this may run in a signal
            # handler, between two steps of the loop
            with contextlib.suppress(RuntimeError):  # its loop is closed: nothing runs on
                task.get_loop().call_soon_threadsafe(task.cancel)
        self.runs.stop_accepting()
        self.health.mark_draining()

    async def drain(self) -> None:
        """Start nothing new; wait for running programs up to drain_timeout_s, then cancel
        what still runs and wait for it to end (its kill grace). Queued runs stay queued."""
        self.begin_shutdown()
        await self.dispatcher.pause()  # claims under way settle first: not launched
        log.info("draining", active=self.slots.active)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.slots.idle(), self.drain_timeout_s)
        token = self.attempts.lease.token
        for attempt in await self.store.active_attempts(self.server_id):
            if attempt.lease_token not in (None, token):
                continue  # another process took this id over and runs it: not ours to stop
            with contextlib.suppress(ConflictError):  # it ended meanwhile
                await self.runs.cancel(attempt.run_id)
        await self.slots.idle()
