"""The scheduler: fires due schedules, applies their overlap policy, publishes a snapshot.

It waits on a timer set to the earliest next fire (or a change through the API), never a
polling loop. Each fire writes the new run and the schedule's new state in one transaction,
then publishes an immutable snapshot that health readers take whole.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import fields, replace
from typing import Any

import structlog

from runyard.background import TaskGroup
from runyard.bad_days import log_failure
from runyard.clock import Clock
from runyard.errors import (
    NotFoundError,
    ScheduleLimitError,
    StaleWriteError,
    UnavailableError,
)
from runyard.jobs import JobRegistry
from runyard.jobs.spec import Job
from runyard.models import Run, RunState, Schedule
from runyard.scheduling.file_params import FileParams
from runyard.scheduling.fires import new_run_of
from runyard.scheduling.requests import changed, new_schedule
from runyard.scheduling.snapshot import SchedulerSnapshot
from runyard.scheduling.timing import next_fire
from runyard.services.admission_holds import Hold
from runyard.services.wakeup import Wakeup
from runyard.store import Store

log = structlog.get_logger(__name__)
OVERLAPS = ("skip", "queue", "allow")
CATCH_UPS = ("once", "none")
# Fires one tick may make; the rest wait for the next tick (at once, after the event loop has
# served others), so a burst of due schedules can never hold the loop or the store for long.
MAX_FIRES_PER_TICK = 50
FIRE_RETRY_S = 1.0  # after a fire that failed, which stays due
STALE_RETRIES = 3  # a change made again to a schedule that changed elsewhere meanwhile


class Scheduler:
    def __init__(
        self,
        store: Store,
        registry: JobRegistry,
        queue: Wakeup,
        clock: Clock,
        *,
        published: Wakeup | None = None,
        recheck_s: float | None = None,
        min_interval_s: float = 1.0,
        max_schedules: int = 1_000,
        server_id: str | None = None,
        life: Callable[[], str | None] | None = None,
    ) -> None:
        self.store = store
        self.server_id = server_id  # names its leadership: replaced once its lease lapses
        self.life = life  # a cluster's: its lease token, None while lapsed or taken over
        self.min_interval_s = min_interval_s
        # each change republishes all of them (health's snapshot), and the list is one answer
        self.max_schedules = max_schedules
        # With several servers, one fires schedules (the store's lock); the others stand by
        # and check every `recheck_s` whether the leader is gone.
        self.recheck_s = recheck_s
        self.leading = False
        self.registry = registry
        self.queue = queue  # a fired run is claimable: the dispatcher looks
        self.clock = clock
        self.schedules: dict[str, Schedule] = {}
        self.snapshot = SchedulerSnapshot("stopped", 0, None, ())
        self.published = published  # told of every new snapshot (health rebuilds)
        self.files: FileParams | None = None  # the runs' service, set once the runtime has it
        # held while a schedule's uploads are checked and it is saved naming them, as an
        # upload's removal holds it (services/uploads/expiry.py): a schedule was stored naming
        # an upload a DELETE removed meanwhile, and its every fire failed (a probe)
        self.pins = asyncio.Lock()
        self._fires = TaskGroup("schedule-fire")
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def snapshot_dict(self) -> dict[str, Any]:
        """The current snapshot, as health shows it (replaced whole on every change)."""
        return self.snapshot.as_dict()

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.reload()
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def reload(self) -> None:
        """Read every schedule from the store (other servers may have changed them)."""
        async with self._lock:
            await self._read_all()

    async def _read_all(self) -> None:
        """Under the lock: the store's schedules, replacing every copy held here."""
        self.schedules = {s.id: s for s in await self.store.list_schedules()}

    def changed_elsewhere(self) -> None:
        """Another server created, changed or deleted a schedule, or fired one."""
        self._fires.start(self._reload_and_wake())

    async def _reload_and_wake(self) -> None:
        await self.reload()
        self._publish(self.snapshot.status)
        self._wake.set()
        self._release_waiting(self.schedules.values())

    def _release_waiting(self, schedules: Iterable[Schedule]) -> None:
        """On the leader, the waiting fires among `schedules` looked at (a resume)."""
        for s in schedules:
            if self.leading and s.pending and not s.paused:
                self._fires.start(self._fire_pending(s))

    async def _catch_up(self) -> None:
        for _ in range(STALE_RETRIES):
            try:
                await self._skip_missed()
                await self._fire_waiting(self.schedules.values())
            except StaleWriteError:  # changed elsewhere meanwhile: all looked at again, read
                await self._read_all()
            else:
                return

    async def _skip_missed(self) -> None:
        now = self.clock.now()
        for s in list(self.schedules.values()):
            missed = s.next_fire_at is not None and s.next_fire_at <= now and not s.paused
            if missed and s.catch_up == "none":  # skip what was missed while nobody fired
                after = next_fire(s, self.min_interval_s, s.created_at, now)
                await self._saved(s, replace(s, next_fire_at=after))
            # catch_up == "once": it is due now and fires once at the first tick

    async def _fire_waiting(self, schedules: Iterable[Schedule]) -> None:
        """Under the lock: a fire that waits for its previous run (overlap=queue) goes if that
        run has ended. Its end is heard as it is recorded (`on_transition`, `ended_elsewhere`),
        but not by a server that was not leading then (down, standing by) nor while the
        schedule was paused: that fire waited for the next slot, or was lost."""
        now = self.clock.now()
        for s in list(schedules):
            if s.pending and not s.paused and not await self._previous_active(s):
                await self._fire(s, now, pending=True)

    async def _lead(self) -> bool:
        life = self.life() if self.life is not None else None
        if self.life is not None and life is None:  # holding on would keep the lock from
            await self.store.stand_down()  # another server, or the id's new life
            leading = False
        else:
            leading = await self.store.try_lead(self.server_id, life)
        if leading and not self.leading:
            log.info("scheduler_leading")
            await self.reload()  # the last leader's firings are in the store
            async with self._lock:
                await self._catch_up()
        elif self.leading and not leading:
            log.warning("scheduler_standing_by")
        self.leading = leading
        return leading

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._fires.cancel()
        self._publish("stopped")

    async def _loop(self) -> None:
        while True:
            delay: float | None = None
            try:
                leading = await self._lead()
            except Exception as exc:  # its store refused (a full disk): tried again shortly
                log_failure(log, "scheduler_lead_failed", exc)  # it used to end the loop
                leading, delay = False, FIRE_RETRY_S
            if leading:
                async with self._lock:
                    refused = await self._tick()
                due = [s.next_fire_at for s in self.schedules.values()
                       if not s.paused and s.next_fire_at is not None]  # fmt: skip
                delay = max(0.0, min(due) - self.clock.now()) if due else None
                if refused:  # still due (nothing changed): tried again shortly, not at once
                    delay = max(delay or 0.0, FIRE_RETRY_S)
            elif delay is None:
                self._publish("standby")
            if self.recheck_s is not None:
                delay = self.recheck_s if delay is None else min(delay, self.recheck_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()

    async def _tick(self) -> bool:
        """Fire what is due; whether a fire failed (its write refused: a full disk) or none
        may be made now (the server is shutting down: each stays due, for its catch_up after
        the restart). Either way the next look is FIRE_RETRY_S away, not at once."""
        refused = False
        now = self.clock.now()
        if not self._accepting():
            self._publish("running", tick=now)
            return True
        due = sorted(
            (s for s in self.schedules.values()
             if not s.paused and s.next_fire_at is not None and s.next_fire_at <= now),
            key=lambda s: s.next_fire_at or 0.0,
        )  # fmt: skip
        stale = False
        for s in due[:MAX_FIRES_PER_TICK]:  # the most overdue first; the rest next tick
            try:
                await self._fire(s, now)
            except StaleWriteError:
                # changed or deleted through another server since it was read: not fired
                # from an old copy (a slot fired twice, a delete undone); read, then looked at
                stale = True
            except Exception:
                refused = True
                log.exception("schedule_fire_failed", schedule_id=s.id)
        if stale:
            await self._read_all()
            self._wake.set()
        self._publish("running", tick=now)
        return refused

    def _publish(self, status: str, tick: float | None = None) -> None:
        self.snapshot = self.snapshot.next(status, self.schedules.values(), tick)
        if self.published is not None:
            self.published.set()

    # -- firing -----------------------------------------------------------------------------

    async def _fire(self, s: Schedule, now: float, *, pending: bool = False) -> None:
        # on a copy, `s` changed only once the store has it (`_saved`): read meanwhile, it
        # names no run not yet stored, and a write that fails (a full disk) leaves it as it
        # was, due again at the next tick
        if not self._accepting():
            return  # shutting down: left due, for its catch_up after the restart
        t = replace(s)
        if not pending:
            t.next_fire_at = next_fire(t, self.min_interval_s, t.created_at, now)
        if await self._previous_active(t):
            if t.overlap == "skip":
                t.skip_count += 1
                await self._saved(s, t)
                return
            if t.overlap == "queue":
                if pending:  # it waits still: nothing changed
                    return
                t.pending = True  # fires when the previous run ends (coalesced)
                await self._saved(s, t)
                return
        made = await new_run_of(t, self.registry, self.files, self.clock)
        if isinstance(made, str):
            t.fail_count += 1
            t.last_error = made
            await self._saved(s, t)
            return
        job, run, hold = made
        if t.last_error is not None:
            log.info("schedule_fires_again", schedule_id=s.id, fail_count=t.fail_count)
            t.last_error = None
        t.fire_count += 1
        t.last_fired_at = now
        t.last_run_id = run.id
        t.pending = False
        await self._store_fired(s, t, job, run, hold)
        self.queue.set()

    async def _store_fired(
        self, s: Schedule, t: Schedule, job: Job, run: Run, hold: Hold | None
    ) -> None:
        """The schedule `t` (`s` changed) with the run it fired, stored together; the run's
        admission held until then."""
        try:
            if self.files is None:
                await self._saved(s, t, run)
            else:  # as a submit's: its uploads marked as used, then stored
                await self.files.stored_with_uploads(job, [run], lambda: self._saved(s, t, run))
        finally:
            if hold is not None:
                hold.release()

    def _accepting(self) -> bool:
        if self.files is not None:
            try:
                self.files.check_accepting()
            except UnavailableError:
                return False
        return True

    async def _saved(
        self, s: Schedule, changed: Schedule, run: Run | None = None, at_most: int | None = None
    ) -> None:
        """`changed` (a copy of `s`) written, with `run` if it fired one; then `s` takes it,
        in one step: what the API shows is what the store holds."""
        await self.store.save_schedule(changed, run, at_most)
        changed.version += 1  # as the store moved it (a new one: stored at 1)
        for f in fields(Schedule):
            setattr(s, f.name, getattr(changed, f.name))

    async def _previous_active(self, s: Schedule) -> bool:
        if s.last_run_id is None:
            return False
        run = await self.store.get_run(s.last_run_id)
        return run is not None and not run.state.terminal

    def ended_elsewhere(self, run_id: str) -> None:
        """overlap=queue, with the previous run executed by another server."""
        for s in list(self.schedules.values()):
            if self.leading and s.pending and s.last_run_id == run_id:
                self._fires.start(self._fire_pending(s))

    def on_transition(self, run: Run, previous: RunState) -> None:
        """overlap=queue: the previous run ended, so the waiting fire goes now."""
        s = self.schedules.get(run.schedule_id or "")
        if s is None or not s.pending or not run.state.terminal or s.last_run_id != run.id:
            return
        self._fires.start(self._fire_pending(s))

    async def _fire_pending(self, s: Schedule) -> None:
        """Its waiting fire, if it waits still and its previous run has ended (`_fire`)."""
        async with self._lock:
            current = self.schedules.get(s.id)  # a reload may have replaced it meanwhile
            if current is not None and current.pending and not current.paused:
                try:
                    await self._fire(current, self.clock.now(), pending=True)
                except StaleWriteError:
                    await self._read_all()
                self._publish("running")

    # -- the API's operations ---------------------------------------------------------------

    async def create(
        self,
        job: str,
        params: dict[str, Any],
        *,
        cron: str | None,
        interval_s: float | None,
        overlap: str = "skip",
        catch_up: str = "once",
        paused: bool = False,
        priority: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> Schedule:
        async with self.pins:  # from the check of its uploads to its save
            s = await new_schedule(
                self.registry, self.files, self.min_interval_s, self.clock.now(), job, params,
                cron=cron, interval_s=interval_s, overlap=overlap, catch_up=catch_up,
                paused=paused, priority=priority, labels=labels or {},
            )  # fmt: skip
            async with self._lock:
                if len(self.schedules) >= self.max_schedules:  # known here: no store turn
                    raise ScheduleLimitError(self.max_schedules)
                await self._saved(s, replace(s), at_most=self.max_schedules)
                self.schedules[s.id] = s
                self._publish(self.snapshot.status)
        self._wake.set()
        return s

    def get(self, schedule_id: str) -> Schedule:
        s = self.schedules.get(schedule_id)
        if s is None:
            raise NotFoundError(f"schedule {schedule_id!r} does not exist")
        return s

    async def update(self, schedule_id: str, changes: dict[str, Any]) -> Schedule:
        async with self.pins, self._lock:
            for tries in range(STALE_RETRIES):
                s = self.get(schedule_id)
                t = await changed(
                    s, changes, self.registry, self.files, self.min_interval_s, self.clock.now()
                )
                try:
                    await self._saved(s, t)  # refused (a full disk): the schedule stays as it was
                    break
                except StaleWriteError:
                    # changed elsewhere since this copy was read (a fire, another change):
                    # the change is made again to what the store holds now (gone: a 404)
                    await self._read_all()
                    if tries == STALE_RETRIES - 1:
                        raise
            self._publish(self.snapshot.status)
        self._wake.set()
        self._release_waiting([s])  # resumed: its previous run may have ended meanwhile
        return s

    async def delete(self, schedule_id: str) -> None:
        async with self._lock:
            if schedule_id not in self.schedules:
                # not held here: none, or one whose stored record is damaged (left out of
                # the schedules read: store/record_rows.py), which is removed all the same
                if not await self.store.delete_schedule(schedule_id):
                    raise NotFoundError(f"schedule {schedule_id!r} does not exist")
                return
            await self.store.delete_schedule(schedule_id)
            del self.schedules[schedule_id]
            self._publish(self.snapshot.status)
