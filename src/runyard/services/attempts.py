"""Attempts: the one writer of an attempt's start and end on this server — launched, adopted,
exited, lost, reaped — and of cancel requests to a running attempt. Each end gives back its
slot, publishes its transition and wakes the dispatcher."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Protocol

import structlog

from runyard import failpoints
from runyard.background import TaskGroup
from runyard.clock import Clock
from runyard.execution.base import Executor
from runyard.execution.protocol import ExitRecord, UnreadableExit
from runyard.jobs.spec import JobSpec
from runyard.models import (
    AttemptEnd,
    AttemptState,
    Claim,
    ClaimAsk,
    Run,
    RunState,
    attempt_key,
    parse_attempt_key,
)
from runyard.services import outcomes
from runyard.services.lease import Lease
from runyard.services.slots import Slots
from runyard.services.start_records import StartRecords
from runyard.services.transitions import Transitions
from runyard.services.wakeup import QueueWakeup
from runyard.store import Store

log = structlog.get_logger(__name__)

RECHECK_FIRST_S, RECHECK_MAX_S = 0.5, 15.0  # a cancel re-check the store could not answer


class AttemptWatcher(Protocol):
    """Who follows an attempt's program while it runs (the stream hub)."""

    async def track(self, run_id: str, attempt: int, fresh: bool) -> None: ...

    async def attempt_ending(
        self, run_id: str, attempt: int, progress_bytes: int | None
    ) -> None: ...


class EndClaims(Protocol):
    """Who lets an attempt's end claim, in its own transaction, what takes its slot (the
    dispatcher): asked before the end is written, told what came of it after."""

    def ask(self, job: str, key: str) -> ClaimAsk | None: ...

    def settle(self, ask: ClaimAsk, claims: list[Claim] | None) -> None: ...


class Attempts:
    def __init__(
        self,
        store: Store,
        executor: Executor,
        slots: Slots,
        transitions: Transitions,
        watcher: AttemptWatcher,
        queue: QueueWakeup,
        lease: Lease,
        clock: Clock,
        *,
        host: str,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.slots = slots
        self.transitions = transitions
        self.watcher = watcher
        self.queue = queue  # an end frees a slot (or re-queues a run): the dispatcher looks
        self.lease = lease
        self.clock = clock
        self.host = host  # this server's id: the attempts it runs carry it
        self.rng = rng or random.Random()  # noqa: S311  jitter, not secrets
        # What this server claimed, kept for its attempt's life so that starting and ending
        # it need not read back what was just written; the store stays the truth for the rest.
        self._claimed: dict[str, Run] = {}
        # Claimed here, its start not yet heard (run id -> attempt); and of those, the ones
        # whose end was heard first: a short program's start and end come in one read
        self._unstarted: dict[str, int] = {}
        self._ended_unstarted: set[str] = set()
        self._specs: dict[str, tuple[dict[str, object], JobSpec]] = {}
        self._cancel_pending: set[str] = set()
        # Programs found running at a restart (run id -> attempt): not claimed here, but their
        # run's cancel flag is this server's to carry out (a cancel flagged just before a crash)
        self._adopted: dict[str, int] = {}
        # Ends the executor told of whose write to the store failed (a full disk): kept for
        # the reconcile pass that retries them, since their exit file may be missing too (a
        # program can put a directory where it goes), and no supervisor tells an end twice.
        self.unrecorded: dict[str, ExitRecord | UnreadableExit] = {}
        self._heard = TaskGroup("cancel_heard")  # cancels other servers accepted, sent on
        self.end_claims: EndClaims | None = None  # set while the dispatcher runs
        self.needs_reconcile: Callable[[str], None] | None = None  # the reconciler's `needed`
        self.start_records = StartRecords(store)

    # -- start --------------------------------------------------------------------------------

    def claimed(self, claim: Claim) -> None:
        """The dispatcher took this attempt: its slot is held and its claim published."""
        self.slots.take(claim.run.job, claim.attempt.key)
        self._claimed[claim.run.id] = claim.run
        self._unstarted[claim.run.id] = claim.run.attempt
        self.transitions.publish(claim.run, RunState.QUEUED)

    def launched(self, run_id: str, number: int) -> bool:
        """Whether this server claimed that attempt itself and has not yet recorded its end:
        its start and its end are its own to record."""
        run = self._claimed.get(run_id)
        return run is not None and run.attempt == number

    def spec_of(self, run: Run) -> JobSpec:
        """The run's job spec, parsed once per distinct spec rather than once per use."""
        cached = self._specs.get(run.job)
        # the store hands every run of a job the same spec dict: mostly found by identity
        if cached is not None and (cached[0] is run.spec or cached[0] == run.spec):
            return cached[1]
        spec = JobSpec.from_stored(run.spec)
        self._specs[run.job] = (run.spec, spec)
        return spec

    async def started(
        self, run: Run, number: int, *, pid: int, pgid: int, start_time: float, at: float
    ) -> None:
        """Its program runs. Its start record is held a moment and written with others
        (`StartRecords`), not waited for here: what follows (its tracking, a cancel that came
        while it was starting, the exit of a short program) does not wait a store turn for
        it. The store writes a start only to an attempt still starting: an end written first
        stands, with the pid and start of its exit record. An attempt whose end was heard
        before its start (`end_heard`), or within the record's wait, gets no start record."""
        self._unstarted.pop(run.id, None)
        key = attempt_key(run.id, number)
        if key in self._ended_unstarted:
            self._ended_unstarted.discard(key)
        else:
            self.start_records.hold(key, (run.id, number, pid, pgid, start_time, at))
        await self._track(run.id, number, fresh=True)
        if run.id in self._cancel_pending:
            await self.executor.cancel(run.id, number)  # cancel came while it was starting

    def end_heard(self, key: str) -> None:
        """The executor told of the attempt's end, as it reads it (before it is recorded): an
        attempt launched here whose start record is not written yet needs none."""
        self.start_records.ended(key)
        run_id, number = parse_attempt_key(key)
        if self._unstarted.get(run_id) == number:
            self._ended_unstarted.add(key)

    async def starts_written(self) -> None:
        """Once the start records heard so far are written (or failed): recovery tells a
        program that ran from one that never started by them. A caller cancelled meanwhile
        (a reconcile pass at shutdown) is; the writes go on."""
        await self.start_records.written()

    async def adopted(self, run_id: str, number: int) -> None:
        """Its program still runs under the supervisor after a restart (reconcile). A cancel
        flagged before the restart is carried out now: the server that flagged it may have
        died before telling the supervisor (a probe: the program ran to its end and the run
        was recorded cancelled, exit code 0)."""
        await self._track(run_id, number, fresh=False)
        self._adopted[run_id] = number
        run = await self.store.get_run(run_id)
        flagged = run is not None and run.cancel_requested and run.attempt == number
        if flagged and run_id not in self._cancel_pending:
            told = False
            try:
                self._cancel_pending.add(run_id)
                told = await self.executor.cancel(run_id, number)
            finally:
                if not told:  # the supervisor away: asked again at the next pass or re-check
                    self._cancel_pending.discard(run_id)

    async def _track(self, run_id: str, number: int, *, fresh: bool) -> None:
        try:
            await self.watcher.track(run_id, number, fresh)
        except Exception:
            # streams are a view: a failure there must never stop a run being recorded
            log.exception("attempt_hook_failed", run_id=run_id, attempt=number)

    # -- cancel -------------------------------------------------------------------------------

    def wanted(self, run_id: str) -> bool:
        """No cancel of the run was asked here: an attempt still starting may be spawned."""
        return run_id not in self._cancel_pending

    async def request_cancel(self, run_id: str, number: int) -> None:
        """Stop the running attempt; one still starting is stopped once its program runs."""
        self._cancel_pending.add(run_id)
        await self.executor.cancel(run_id, number)

    def cancel_heard(self, payload: str) -> None:
        """A cancel accepted by any server ("ID ATTEMPT HOST"): the attempt is stopped if it
        runs here, where its program is (a cluster's; the server asked may be another)."""
        if not payload:  # the listener (re)connected: what was said meanwhile is lost
            self._heard.start(self.recheck_cancels())
            return
        parts = payload.split()
        if len(parts) != 3 or parts[2] != self.host or not parts[1].isdigit():
            return
        if parts[0] not in self._cancel_pending:  # asked here: stopped already
            self._heard.start(self.request_cancel(parts[0], int(parts[1])))

    async def recheck_cancels(self) -> None:
        """Cancels that may have gone unheard (the listener reconnected): the store's flag
        of each attempt running here, read again, until the store answers. The listener can
        be back before the pool is (PostgreSQL restarting): a re-check that failed once was
        dropped, and a cancel accepted meanwhile was never carried out."""
        delay = RECHECK_FIRST_S
        while True:
            try:
                await self._recheck_cancels()
            except Exception as exc:
                log.warning("cancel_recheck_failed", error=str(exc)[:200], retry_in_s=delay)
            else:
                return
            await asyncio.sleep(delay)  # the store says nothing when it is back
            delay = min(delay * 2, RECHECK_MAX_S)

    async def stop(self) -> None:
        """At shutdown: what was heard from other servers and is still being carried out (a
        re-check waiting for the store) stops with the server."""
        await self._heard.cancel()

    async def _recheck_cancels(self) -> None:
        running = {run_id: run.attempt for run_id, run in self._claimed.items()}
        for run_id, number in [*running.items(), *self._adopted.items()]:
            run = await self.store.get_run(run_id)
            if run is not None and run.cancel_requested and run_id not in self._cancel_pending:
                await self.request_cancel(run_id, number)

    # -- end ----------------------------------------------------------------------------------

    async def exited(self, record: ExitRecord | UnreadableExit) -> None:
        """An attempt ended (event, exit file or failed launch): record it exactly once.
        An unreadable record ends it `lost`: it ended, but nobody can say how."""
        run_id, number = parse_attempt_key(record.key)
        run = self._claimed.get(run_id)
        if run is None or run.attempt != number:
            run = await self.store.get_run(run_id)  # adopted, or learned from an exit file
        if run is None or run.attempt != number or run.state is not RunState.RUNNING:
            # ended already (reaped elsewhere, say): its program is over here, and so is its
            # slot, which an attempt adopted at start holds without a claim here
            self.unrecorded.pop(record.key, None)
            self._adopted.pop(run_id, None)
            if self.launched(run_id, number):
                self._let_go(run_id)
            if self.slots.give_back(record.key):
                log.warning("attempt_end_fenced", run_id=run_id, attempt=number)
                self.queue.set()
            return
        if run_id in self._cancel_pending and not run.cancel_requested:
            run = replace(run, cancel_requested=True)
        spec = self.spec_of(run)
        spent = await self.as_spent(run, spec)
        if isinstance(record, UnreadableExit):
            end, progress = outcomes.lost(spent, spec, self.clock.now(), self.rng, record.why), None
        else:
            end, progress = outcomes.decide(record, spent, spec, self.rng), record.progress_bytes
        failpoints.hit("before_end")
        await self.end(run, number, end, progress)

    async def lost(self, run: Run, number: int, why: str) -> None:
        spec = self.spec_of(run)
        spent = await self.as_spent(run, spec)
        await self.end(run, number, outcomes.lost(spent, spec, self.clock.now(), self.rng, why))

    async def may_have_run(self, run_id: str, number: int) -> bool:
        """Whether the attempt's program may have run though no start of it was heard: its
        log is opened just before the spawn, so without it, it never did."""
        return await asyncio.to_thread(self.executor.paths(run_id).log(number).exists)

    async def as_spent(self, run: Run, spec: JobSpec) -> Run:
        """The run as its retry policy counts it: by the attempts whose program ran. One that
        never started (the executor away, a spawn given up on) took a number but spends none
        of `max_attempts`. The attempts are read only when the number says the budget is
        spent (a probe: runs failed with the retry their program asked for never made)."""
        if run.attempt <= 1 or run.attempt < spec.max_attempts or not spec.retry_on:
            return run
        unstarted = sum(
            1 for a in await self.store.get_attempts(run.id)
            if a.number != run.attempt and a.state is AttemptState.LOST
            and a.outcome == "not_started"
        )  # fmt: skip
        return replace(run, attempt=run.attempt - unstarted) if unstarted else run

    async def not_started(self, run: Run, number: int, why: str) -> None:
        await self.end(run, number, outcomes.not_started(self.clock.now(), why))

    def claim_unspawned(self, run_id: str) -> bool:
        """Whether a claim of this run is still held here (a launch that failed may end it)."""
        return run_id in self._claimed

    def unended(self, run_id: str, number: int, why: str) -> None:
        """A claim whose launch failed, and whose end (back to the queue) could not be written
        either (a disk still full): left to the reconcile pass, asked for now and retried
        until it works, which re-queues it. Kept as this server's own, a retry pass skipped
        it: the run stayed running, its slot held, for good. The slot is given back when the
        pass records the end."""
        if self.launched(run_id, number):
            del self._claimed[run_id]
        if self.needs_reconcile is not None:
            self.needs_reconcile(why)

    async def end(
        self, run: Run, number: int, end: AttemptEnd, progress_bytes: int | None = None
    ) -> None:
        try:
            await self.watcher.attempt_ending(run.id, number, progress_bytes)
        except Exception:
            log.exception("attempt_hook_failed", run_id=run.id, attempt=number)
        cancelled = run.cancel_requested or run.id in self._cancel_pending
        end = end.honouring_cancel(cancelled)
        updated, settle = await self._write_end(run, number, end)
        self.unrecorded.pop(attempt_key(run.id, number), None)  # written, or ended before
        counted = self.slots.give_back(attempt_key(run.id, number))
        if updated is None:
            # already recorded from the other source (event vs exit file), or fenced: our
            # lease lapsed and another server declared the attempt lost; either way its
            # program is over here, and so is its slot
            if counted:
                log.warning("attempt_end_fenced", run_id=run.id, attempt=number)
                self._let_go(run.id)
                self.queue.set()
            return
        self._let_go(run.id)
        if updated.state.terminal:
            self._cancel_pending.discard(run.id)
        self.transitions.publish(updated, RunState.RUNNING)
        if settle is not None:
            settle()  # what took its slot launched, or the queue known dry
        elif updated.state.terminal:
            self.queue.slot_freed()  # a claim only if something may be waiting for the slot
        else:
            self.queue.set()  # re-queued: claimable now or when its backoff is due

    def _let_go(self, run_id: str) -> None:
        """The attempt claimed (or adopted) here has its end recorded: nothing of it is kept."""
        self._claimed.pop(run_id, None)
        self._adopted.pop(run_id, None)
        number = self._unstarted.pop(run_id, None)
        if number is not None:
            self._ended_unstarted.discard(attempt_key(run_id, number))

    async def _write_end(
        self, run: Run, number: int, end: AttemptEnd
    ) -> tuple[Run | None, Callable[[], None] | None]:
        """The end written, and the run as it left it. An end that leaves its run terminal
        frees a slot: when the dispatcher allows (`Dispatcher.ask`), what takes it is claimed
        in the end's own transaction, and `settle` launches it once the slot is given back: no
        claim of its own (a transaction, a loop turn) per slot freed under load."""
        claimer = self.end_claims if end.run_state.terminal else None
        ask = claimer.ask(run.job, attempt_key(run.id, number)) if claimer is not None else None
        if claimer is None or ask is None:
            return await self.store.end_attempt(run.id, number, end, token=self.lease.token), None
        try:
            updated, claims = await self.store.end_and_claim(
                run.id, number, end, self.lease.token, ask
            )
        except BaseException:
            claimer.settle(ask, None)
            raise
        if updated is None:  # recorded already, or fenced: nothing claimed
            claimer.settle(ask, None)
            return None, None
        return updated, partial(claimer.settle, ask, claims)

    async def reap(self, run: Run, number: int, token: str | None, why: str) -> None:
        """Another server's attempt whose lease expired: lost, retried here or elsewhere per
        its job's policy. Only if it is still held under that (stale) lease: a server that
        came back in time, or another reaper, may have settled it first."""
        spec = self.spec_of(run)
        end = outcomes.lost(await self.as_spent(run, spec), spec, self.clock.now(), self.rng, why)
        end = end.honouring_cancel(run.cancel_requested)
        try:
            # a program its dead server can no longer fence (a Slurm job) is stopped here
            # before its run may be retried: never two live attempts
            await self.executor.kill_leftovers(run.id, number, None, None)
        except Exception:
            # not ended while it may run on: the next reaping pass tries again
            log.exception("reap_kill_failed", run_id=run.id, attempt=number)
            return
        updated = await self.store.end_attempt(run.id, number, end, token=token, by=self.host)
        if updated is not None:
            self.transitions.publish(updated, RunState.RUNNING)
            self.queue.set()
