"""Dispatch: take queued runs into free slots and launch their attempts.

Woken by events (submit, an end, cancel, the earliest backoff expiry), never by a polling
sleep. What a launch leads to — its start, its end — is recorded by the attempts owner.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Mapping
from dataclasses import replace
from functools import partial

import structlog

from runyard import failpoints
from runyard.background import TaskGroup
from runyard.bad_days import expected, log_failure
from runyard.clock import Clock
from runyard.execution.base import (
    Executor,
    ExecutorGoneError,
    ExecutorHeldError,
    ExecutorUnavailableError,
    Launch,
    LaunchError,
    NotWantedError,
    ShortageError,
    Started,
)
from runyard.execution.protocol import ExitRecord
from runyard.jobs import JobRegistry
from runyard.jobs.spec import Job
from runyard.models import AttemptEnd, Claim, ClaimAsk
from runyard.services import outcomes
from runyard.services.attempts import Attempts
from runyard.services.job_limits import JobLimits
from runyard.services.launches import launch_of
from runyard.services.lease import Lease
from runyard.services.slots import Slots
from runyard.services.unavailable import ExecutorHold, unavailable_retry_s
from runyard.services.uploads.fetch import InputFetcher
from runyard.services.wakeup import QueueWakeup
from runyard.store import Store

log = structlog.get_logger(__name__)

STOP_GRACE_S = 10.0  # how long stop() waits for a claim under way before it cancels it


class Dispatcher:
    def __init__(
        self,
        store: Store,
        registry: JobRegistry,
        executor: Executor,
        slots: Slots,
        attempts: Attempts,
        queue: QueueWakeup,
        lease: Lease,
        clock: Clock,
        *,
        host: str,
        inputs: InputFetcher | None = None,
    ) -> None:
        self.inputs = inputs  # in a cluster: uploads another member holds, fetched first
        self.store = store
        self.registry = registry
        self.executor = executor
        self.slots = slots
        self.attempts = attempts
        self.queue = queue  # set by whoever may have made a run claimable
        self.lease = lease
        self.clock = clock
        self.host = host  # this server's id: attempts it claims carry it
        self.paused = False
        self._deferred = False  # the last turn failed as a bad day does: said once
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._due: asyncio.TimerHandle | None = None
        self._launches = TaskGroup("launch")
        self._spawned: set[str] = set()  # launches whose program exists
        self.hold = ExecutorHold(self.queue.set)  # the executor starts nothing for now
        self.limits = JobLimits()
        registry.listeners.append(self.limits.heard)
        # Claims in flight, the dispatcher's own and those ends make (`ask`). Each takes only
        # slots nobody else counts (the free ones; an end, the one it frees), but a job's room
        # is shared: where a job has a concurrency limit, a claim waits for the others.
        self._in_flight = 0
        self._claims_over = asyncio.Event()
        self._claims_over.set()

    async def start(self) -> None:
        await self.slots.load(self.store, self.host)
        await self.limits.load(self.store, (await self.registry.snapshot()).jobs)
        self._task = asyncio.create_task(self._loop(), name="dispatcher")
        self.attempts.end_claims = self
        self.queue.set()

    async def pause(self) -> None:
        """Draining: claim nothing more (what runs goes on; queued runs stay queued). Returns
        once the claims already under way (the dispatcher's, an end's) are settled: what they
        took went back to the queue, never launched (`_launch_all`)."""
        self.paused = True
        await self._claims_over.wait()

    def resume(self) -> None:
        """After a pause that was not a drain (its supervisor replaced): claims again."""
        self.paused = False
        self.hold.clear()
        self.queue.set()

    async def stop(self) -> None:
        self.attempts.end_claims = None
        task = self._task
        if task is not None and not task.done():
            # Told, not cancelled: a claim of its own that is under way may have committed
            # already; cancelled, what it took would stay claimed with no program. It claims
            # nothing more, and ends once what it took is launched (or at the latest after
            # STOP_GRACE_S, a store that never answers).
            self._stopping = True
            self.queue.set()
            try:
                async with asyncio.timeout(STOP_GRACE_S):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
            except asyncio.CancelledError:
                task.cancel()  # our caller gave up: the dispatcher does not outlive it
                raise
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task  # settled already; an error of its own is raised here, as ever
        if self._due is not None:  # after the loop: its last turn may have armed one
            self._due.cancel()
        await self._claims_over.wait()  # an end's claim under way launches before we stop
        await self._launches.wait()

    async def _loop(self) -> None:
        while not self._stopping:
            await self.queue.wait()
            self.queue.clear()
            if self._stopping:
                return
            if self.paused:
                continue
            try:
                await self._dispatch()
            except Exception as exc:
                # the store may be busy or full: try again shortly rather than stall the
                # queue, and say so once for the whole stretch, not at every try
                if not (expected(exc) and self._deferred):
                    log_failure(log, "dispatch_failed", exc)
                self._deferred = expected(exc)
                asyncio.get_running_loop().call_later(0.5, self.queue.set)
            else:
                if self._deferred:
                    log.info("dispatch_resumed")
                self._deferred = False

    async def _dispatch(self) -> None:
        if self.lease.lapsed(self.clock.now()):
            return  # back from a pause past the lease: claim once membership has renewed it
        if not self.queue.due_stale:  # no backoff added since it was read: the timer stands
            await self._claim_free_slots()
            return
        self.queue.due_stale = False
        # When the next backing-off run becomes claimable does not depend on what is claimed
        # now (a claim takes runs due by now, this reads those due later): asked at once, it
        # is read beside the claim (on SQLite, by the reads' own thread).
        due = asyncio.ensure_future(self.store.next_due(self.clock.now()))
        try:
            await self._claim_free_slots()
            when = await due
        except BaseException:
            due.cancel()  # the loop tries again shortly, and reads it again then
            self.queue.due_stale = True
            raise
        self._arm_due_timer(when)

    async def _claim_free_slots(self) -> None:
        while (free := self.slots.free) > 0 and not self._stopping:
            snapshot = await self.registry.snapshot()
            room = self._room(snapshot.jobs)
            if room and self._in_flight:  # limits in play: count after the claims in flight
                await self._claims_over.wait()
                continue
            if self.paused or self._stopping:  # while the job files were read: a drain
                return  # has begun, or the server stops
            now = self.clock.now()
            if self.lease.lapsed(now) or self.hold.holds(now):  # since this turn began: paused
                return
            began = self.queue.generation
            self._begin_claim()
            try:
                claims = await self.store.claim(free, room, now, self.host, self.lease.token)
            finally:
                self._end_claim()
            self._launch_all(claims)
            if len(claims) < free:
                self._maybe_drained(room, began)
                return

    def _room(self, jobs: Mapping[str, Job]) -> dict[str, int]:
        return self.slots.job_room(self.limits.of(jobs))

    @property
    def claiming(self) -> bool:
        """A claim of the dispatcher's own is waiting for the store's answer."""
        return self._in_flight > 0

    def _begin_claim(self) -> None:
        self._in_flight += 1
        self._claims_over.clear()

    def _end_claim(self) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._claims_over.set()

    def _launch_all(self, claims: list[Claim]) -> None:
        if self.paused:  # claimed before the drain began, settled after: not started
            for claim in claims:
                self.attempts.claimed(claim)
                self._launches.start(self._not_launched(claim))
            return
        for claim in claims:
            # the launch first: its spawn request then goes out before the claim's log line
            # (transitions.py), and claimed() still runs before the launch's first step
            self._launches.start(self._launch(claim, self._send_now(claim)))
            self.attempts.claimed(claim)

    def _send_now(self, claim: Claim) -> Awaitable[Started | None] | None:
        """The claim's spawn request sent in this step, when the executor can (a plain local
        run): it leaves before what this step queued, such as the answer to the submit that
        claimed it (api/routes/runs.py). None: the launch sends it in its own step. What fails
        here is raised where the launch awaits it, and handled there as ever."""
        try:
            launch = self._request(claim)
            if launch.inputs and self.inputs is not None:
                return None  # uploads another member holds are fetched first
            failpoints.hit("before_spawn")
            return self.executor.launch_now(launch)
        except Exception as exc:
            failed: asyncio.Future[Started | None] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed

    def _maybe_drained(self, room: dict[str, int], began: int) -> None:
        """A claim took less than it had room for: with no job's limit holding a run back and
        no row skipped, nothing claimable is left."""
        if not room and self.store.claims_see_every_run:
            self.queue.drained(began)

    # -- claims made by an attempt's end (services/attempts.py) --------------------------------

    def ask(self, job: str, key: str) -> ClaimAsk | None:
        """What the end of attempt `key` of `job` may claim in its own transaction: a run for
        the slot it frees. None when the dispatcher claims for it the usual way: paused, its
        lease lapsed, the earliest backoff to read, the job files to scan again, the slot not
        one it holds or more held than there are (capacity lowered across a restart), a
        job's limit shared with a claim in flight; or when nothing waits."""
        now = self.clock.now()
        jobs = self.registry.last_scan
        if (
            jobs is None or self.paused or self.queue.due_stale or not self.queue.may_have_runs
            or self.lease.lapsed(now) or self.hold.holds(now) or not self.slots.holds(key)
            or self.slots.free < 0
        ):  # fmt: skip
            return None
        room = self._room(jobs.jobs)
        if room and self._in_flight:
            return None
        if job in room:
            room[job] += 1  # its attempt's slot is about to be given back
        self._begin_claim()
        return ClaimAsk(
            limit=1, room=room, now=now, host=self.host, token=self.lease.token,
            generation=self.queue.generation,
        )  # fmt: skip

    def settle(self, ask: ClaimAsk, claims: list[Claim] | None) -> None:
        """What the end claimed (None: nothing, the end was not written or changed nothing),
        after its own slot was given back."""
        self._end_claim()
        if claims is None:
            return
        self._launch_all(claims)
        if len(claims) < ask.limit:
            self._maybe_drained(ask.room, ask.generation)
        if self.slots.free > 0:
            # a slot still free (a claim that skipped rows, a job's limit): the dispatcher
            # looks, unless the queue is known dry
            self.queue.slot_freed()

    def _arm_due_timer(self, due: float | None) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None
        if due is not None:
            delay = max(0.0, due - self.clock.now())
            self._due = asyncio.get_running_loop().call_later(delay, self.queue.set)

    async def _not_launched(self, claim: Claim) -> None:
        await self._requeue(claim, outcomes.not_started(self.clock.now(), "the server is draining"))

    async def _requeue(self, claim: Claim, end: AttemptEnd) -> None:
        """`claim`'s attempt ended as never started. An end the store does not take (a disk
        still full) is left to the reconcile pass, retried until it is written: kept as this
        server's own, no pass would settle it, and its run stayed running for good."""
        try:
            await self.attempts.end(claim.run, claim.attempt.number, end)
        except Exception as exc:
            log.warning("requeue_failed", run_id=claim.run.id, attempt=claim.attempt.number,
                        error=str(exc))  # fmt: skip
            self.attempts.unended(
                claim.run.id, claim.attempt.number,
                f"attempt {claim.attempt.key}, never started, was not recorded ({exc})",
            )  # fmt: skip

    async def _launch(self, claim: Claim, sent: Awaitable[Started | None] | None) -> None:
        try:
            await self._start(claim, sent)
        except Exception as exc:
            # Never let a claimed attempt hold its slot in silence: an error before the spawn
            # re-queues the run as never started (after its exit, the exit record ends it).
            log.exception("launch_failed", run_id=claim.run.id, attempt=claim.attempt.number)
            if self.attempts.claim_unspawned(claim.run.id) and claim.run.id not in self._spawned:
                # not at once: a launch that fails the same way again must not spin
                end = outcomes.not_started(
                    self.clock.now(), f"launch failed: {exc}",
                    unavailable_retry_s(claim.attempt.number),
                )  # fmt: skip
                await self._requeue(claim, end)
        finally:
            self._spawned.discard(claim.run.id)

    def _request(self, claim: Claim) -> Launch:
        return launch_of(claim, self.attempts.spec_of(claim.run))

    async def _launched(self, claim: Claim) -> Started | None:
        # prepared before its spawn (a workspace, inputs): a cancel meanwhile starts nothing
        wanted = partial(self.attempts.wanted, claim.run.id)
        launch = replace(self._request(claim), still_wanted=wanted)
        failpoints.hit("before_spawn")
        if launch.inputs and self.inputs is not None:
            await self.inputs.ensure(claim.run.id, launch.inputs.values())
            if self.paused:  # meanwhile: a drain, or a supervisor replaced (not before reconcile)
                raise ExecutorUnavailableError("paused while its inputs were fetched")
        return await self.executor.launch(launch)

    async def _start(self, claim: Claim, sent: Awaitable[Started | None] | None) -> None:
        run, number = claim.run, claim.attempt.number
        try:
            started = await (sent if sent is not None else self._launched(claim))
        except ExecutorUnavailableError as exc:
            if isinstance(exc, ExecutorGoneError) and await self.attempts.may_have_run(
                run.id, number
            ):
                # gone with the spawn unanswered, its log opened: its program may have run
                # (and killed it: a program that kills its supervisor was run again and
                # again, free, and took every other run on the host with it each time)
                await self.attempts.lost(
                    run, number, f"its executor went away as it started it ({exc})"
                )
                return
            # unavailable (the supervisor went away, Slurm's controller is silent or full) or
            # short of room: back to the queue, not claimed again before it may have recovered
            why = (
                str(exc)
                if isinstance(exc, ShortageError)
                else f"the executor is unavailable ({exc})"
            )
            end = outcomes.not_started(self.clock.now(), why, unavailable_retry_s(number))
            if isinstance(exc, ExecutorHeldError):
                self.hold.begin(self.clock.now())
            await self.attempts.end(run, number, end)
            return
        except NotWantedError:
            await self.attempts.end(run, number, outcomes.cancelled_before_start(self.clock.now()))
            return
        except LaunchError as exc:
            record = ExitRecord(
                key=claim.attempt.key, pid=None, exit_code=None, signal=None,
                killed_by=None, started_at=None, ended_at=self.clock.now(), error=str(exc),
            )  # fmt: skip
            await self.attempts.exited(record)
            return
        if started is None:
            return  # could not start: the supervisor's exit record is on its way
        self._spawned.add(run.id)
        failpoints.hit("after_spawn")
        await self.attempts.started(
            run, number, pid=started.pid, pgid=started.pgid,
            start_time=started.start_time, at=started.started_at,
        )  # fmt: skip
