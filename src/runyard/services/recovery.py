"""Reconciling the store with reality after a start or a lost supervisor.

For every attempt the store thinks is starting or running: a live entry in the supervisor
means it still runs (adopt it); an exit file means it ended (finalise it with its real exit
status, or `lost` if the file cannot be read or contradicts what the store knows of the
attempt); anything else is lost, but in a cluster only once the life this server replaced at
registration, which may still run it where it ran, has been fenced (held back until then).
An exit file is data from outside (its program can write it): one found while the program
still runs (pid and start time) is ignored, and the attempt is lost.
Either way what is left of its processes is killed (its group checked by pid and start time)
before its end is recorded, so no settled run leaves a live program and no run ever has two
live attempts. Run by run: one run's damaged files or failing store write are logged, counted
and retried later, and never stop the others or the server from starting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, replace

import structlog

from runyard.bad_days import log_failure
from runyard.clock import isoformat
from runyard.execution.base import ExecutorUnavailableError
from runyard.execution.protocol import ExitRecord, UnreadableExit
from runyard.models import Attempt, AttemptState, parse_attempt_key
from runyard.services.attempts import Attempts
from runyard.services.wakeup import Wakeup

log = structlog.get_logger(__name__)

RETRY_BASE_S = 0.5
RETRY_MAX_S = 15.0
# The clocks that stamp one attempt may differ (a Slurm node's and the server's; a quick job
# may even end before the server has noted its submission): an exit record that ends this much
# before its attempt's start is taken for that, and ends at the start; any earlier, or this
# much after now, is no record of this attempt.
CLOCK_SKEW_S = 60.0


@dataclass(frozen=True, slots=True)
class ReconcileState:
    """How the last reconcile went, for readiness: replaced as a whole after every pass."""

    ok: bool
    error: str | None = None  # what failed (the first failure, and how many runs failed)
    at: float = 0.0  # when the pass ended (epoch seconds); 0: none has ended yet
    failed: int = 0  # runs that could not be reconciled (retried until they are)


@dataclass(frozen=True, slots=True)
class Pass:
    counts: Counter[str]
    errors: list[str]


async def reconcile(attempts: Attempts, *, skip_own: bool = False) -> Pass:
    """One pass over this server's active attempts. `skip_own`: leave alone the attempts this
    server launched itself (a retry pass while it runs must not take an attempt being
    spawned right now for one that never started). Raises only if nothing can be listed."""
    store, executor = attempts.store, attempts.executor
    await attempts.starts_written()  # a program that ran must not be read as never started
    alive = await executor.running()
    mine = await store.active_attempts(attempts.host)
    counts: Counter[str] = Counter()
    errors: list[str] = []
    # Programs the supervisor still runs for attempts that are no longer this server's (its
    # lease lapsed and another server retried them): stopped, so no run has two live attempts.
    for key in set(alive) - {a.key for a in mine}:
        try:
            run_id, number = parse_attempt_key(key)
            await executor.cancel(run_id, number, reason="fenced")
            counts["fenced"] += 1
        except Exception as exc:
            log_failure(log, "reconcile_fence_failed", exc, attempt=key[:80])
            errors.append(f"attempt {key[:80]}: {_says(exc)}")
    for attempt in mine:
        try:
            outcome = await _settle(attempts, attempt, alive, skip_own=skip_own)
        except Exception as exc:
            # its files or its store write failed: the others go on, a later pass retries it
            log_failure(
                log, "reconcile_run_failed", exc, run_id=attempt.run_id, attempt=attempt.number
            )
            errors.append(f"run {attempt.run_id}: {_says(exc)}")
            outcome = "failed"
        counts[outcome] += 1
    # Ends told and not recorded then (the store was away) of attempts no longer this
    # server's (reaped elsewhere meanwhile): not among `mine`, and held here (their slots,
    # their claims) until recorded, which ends them as fenced. Left, the server kept them
    # for good: busy at capacity, claiming nothing, and ready all the same.
    listed = {a.key for a in mine}
    for key, record in list(attempts.unrecorded.items()):
        if key in listed:
            continue
        try:
            await attempts.exited(record)
            counts["released"] += 1
        except Exception as exc:
            log_failure(log, "reconcile_run_failed", exc, attempt=key[:80])
            errors.append(f"attempt {key[:80]}: {_says(exc)}")
            counts["failed"] += 1
    if counts:
        log.info("reconciled", **counts)
    return Pass(counts, errors)


async def _settle(
    attempts: Attempts, attempt: Attempt, alive: Collection[str], *, skip_own: bool
) -> str:
    # A retry pass runs beside the dispatcher: what it launched itself (being spawned right
    # now, or running) is its own to record, unless an exit file (readable or not) says its
    # program ended, and ending it here is as safe as anywhere.
    own = skip_own and attempts.launched(attempt.run_id, attempt.number)
    if attempt.key in alive:
        # The supervisor writes an exit file only after it stops listing the attempt: a file
        # beside a live attempt is not its record (its program may have written it).
        if own:
            return "own"
        await attempts.adopted(attempt.run_id, attempt.number)
        return "adopted"
    executor = attempts.executor
    record = await executor.read_exit(attempt.run_id, attempt.number)
    told = None
    if record is None:  # told of, and not recorded then: the supervisor will not tell again
        record = told = attempts.unrecorded.get(attempt.key)
    if record is None and (known := await _known_after_all(attempts, attempt, skip_own)):
        return known
    # What the supervisor told is its own word (no file a program could write): not doubted
    # because something carrying the attempt's key, a descendant not swept yet, runs on.
    if (
        record is not None
        and record is not told
        and await executor.still_runs(
            attempt.run_id, attempt.number, attempt.pid, attempt.proc_start_time
        )
    ):
        # Its program still runs, so the file is not the supervisor's (written only once it
        # has reaped the program): its program wrote it. Ignored, as beside a listed attempt.
        if skip_own and attempts.launched(attempt.run_id, attempt.number):
            return "own"  # spawned since the list, by a supervisor that tells its end
        why = "its program ran on with no supervisor, " + (
            "beside an exit file it wrote (ignored)"
            if isinstance(record, ExitRecord)
            else f"and an {record.why}"  # no file of its own to blame: unreadable (ENOTDIR)
        )
        record = UnreadableExit(key=attempt.key, why=why)
    if isinstance(record, ExitRecord):
        record = _checked(record, attempt, attempts.clock.now())
    if not isinstance(record, ExitRecord):
        return await _end_unrecorded(attempts, attempt, record)
    # Nothing of it outlives its recorded end: a descendant the supervisor had not swept yet
    # when it died (group checked by pid and start time, the rest by its attempt key).
    await executor.kill_leftovers(
        attempt.run_id, attempt.number, attempt.pid, attempt.proc_start_time
    )
    await attempts.exited(record)
    return "finalised"


async def _known_after_all(attempts: Attempts, attempt: Attempt, skip_own: bool) -> str | None:
    """An attempt not listed and without an end that is known all the same: launched by this
    pass's own server meanwhile ("own": asked after the read, a claim made meanwhile is known
    by now); or its program runs and its executor follows it now ("adopted": a list that left
    it out, as Slurm's squeue can — taken for lost, it was killed and retried); or it may
    still run where the life this server replaced ran it ("held_back": settled later)."""
    if skip_own and attempts.launched(attempt.run_id, attempt.number):
        return "own"
    executor = attempts.executor
    runs = await executor.still_runs(
        attempt.run_id, attempt.number, attempt.pid, attempt.proc_start_time
    )
    if runs and attempt.key in await executor.running():
        await attempts.adopted(attempt.run_id, attempt.number)
        return "adopted"
    if _may_run_elsewhere(attempts, attempt):
        log.info("attempt_held_back", run_id=attempt.run_id, attempt=attempt.number,
                 until=isoformat(attempts.lease.inherited_until or 0.0))  # fmt: skip
        return "held_back"
    return None


def _may_run_elsewhere(attempts: Attempts, attempt: Attempt) -> bool:
    """Whether the attempt, not run here and of unknown end, may still run where the life this
    one replaced ran it: another host (whose programs no read here sees), or a process paused
    or copied, until that lease's end and the margin, when its own supervisor has fenced it.
    Settled now it was retried beside it. What this process launched itself is its own."""
    until = attempts.lease.inherited_until
    return (
        until is not None
        and attempts.clock.now() < until
        and not attempts.launched(attempt.run_id, attempt.number)
    )


def _checked(record: ExitRecord, attempt: Attempt, now: float) -> ExitRecord | UnreadableExit:
    """The record, if it can be this attempt's end as the store knows the attempt (its end
    never before the start it will be recorded with); else unreadable, saying why."""
    start = attempt.started_at if attempt.started_at is not None else record.started_at
    why = _contradiction(record, attempt, start, now)
    if why is not None:
        return UnreadableExit(key=attempt.key, why=f"unreadable exit file ({why})")
    if start is not None and record.ended_at < start:  # within CLOCK_SKEW_S
        return replace(record, ended_at=start)
    return record


def _contradiction(
    record: ExitRecord, attempt: Attempt, start: float | None, now: float
) -> str | None:
    if record.key != attempt.key:  # read_exit checked it; an executor's bug must not leak
        return "key names another attempt"
    if record.pid is not None and attempt.pid is not None and record.pid != attempt.pid:
        return f"pid {record.pid} is not its program's, {attempt.pid}"
    if start is not None and record.ended_at < start - CLOCK_SKEW_S:
        return f"ended_at {isoformat(record.ended_at)} is before its start {isoformat(start)}"
    if record.ended_at > now + CLOCK_SKEW_S:
        return f"ended_at {isoformat(record.ended_at)} is in the future"
    return None


async def _end_unrecorded(
    attempts: Attempts, attempt: Attempt, record: UnreadableExit | None
) -> str:
    """An attempt nobody runs and whose end is unknown: lost (or never started)."""
    run = await attempts.store.get_run(attempt.run_id)
    if run is None:
        return "gone"
    # Nothing of it may run on when a retry starts: no run ever has two live attempts.
    await attempts.executor.kill_leftovers(
        attempt.run_id, attempt.number, attempt.pid, attempt.proc_start_time
    )
    if record is not None:
        await attempts.lost(run, attempt.number, record.why)
        return "unreadable"
    if attempt.state is AttemptState.STARTING and not await attempts.may_have_run(
        attempt.run_id, attempt.number
    ):
        # no log: it was never spawned. With one, it may have run (its start unrecorded: the
        # store failed, or its end was heard first and written with it) and is lost, spent
        why = "the server stopped before its program was spawned"
        await attempts.not_started(run, attempt.number, why)
        return "requeued"
    why = "its program was no longer under a supervisor"
    await attempts.lost(run, attempt.number, why)
    return "lost"


def _says(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:199] + "…"


class Reconciler:
    """Runs reconcile passes one at a time, keeps `state` for readiness, and after a failed
    pass retries with backoff until one succeeds. `poke()` (any sign the store or disk works
    again, e.g. a run transition) retries at once instead of waiting out the backoff."""

    def __init__(
        self,
        attempts: Attempts,
        *,
        poked: Wakeup | None = None,
        retry_base_s: float = RETRY_BASE_S,
        retry_max_s: float = RETRY_MAX_S,
        min_gap_s: float = RETRY_BASE_S,
    ) -> None:
        self.attempts = attempts
        self.state = ReconcileState(ok=False, error="not reconciled yet")
        self.passes = 0
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._min_gap_s = min_gap_s
        self._lock = asyncio.Lock()
        self._poked = poked or Wakeup()  # set on any transition too
        self._retry: asyncio.Task[None] | None = None
        self._needed: str | None = None
        self._later: asyncio.Task[None] | None = None  # settles what a pass held back
        self._held_back = False

    async def run(self, *, skip_own: bool = False) -> ReconcileState:
        """One pass; never raises. A failed pass arms the retry loop."""
        async with self._lock:
            self._needed = None  # this pass settles what was asked for before it began
            try:
                result = await reconcile(self.attempts, skip_own=skip_own)
            except ExecutorUnavailableError as exc:
                # nothing can be listed while the executor is away (a supervisor being
                # replaced): expected, and retried; not a fault to trace
                log.warning("reconcile_deferred", error=_says(exc))
                result = Pass(Counter(), [_says(exc)])
            except Exception as exc:
                log_failure(log, "reconcile_failed", exc)
                result = Pass(Counter(), [_says(exc)])
            self.passes += 1
            error = None
            if result.errors:
                more = f" (and {len(result.errors) - 1} more)" if len(result.errors) > 1 else ""
                error = f"reconcile failed: {result.errors[0]}{more}"
            error = error or self._needed  # asked for while this pass ran: one more
            self.state = ReconcileState(
                ok=error is None, error=error, at=time.time(), failed=result.counts["failed"]
            )
            self._held_back = result.counts["held_back"] > 0
        if error is not None:
            self._arm_retry()
        if self._held_back and (self._later is None or self._later.done()):
            self._later = asyncio.create_task(self._settle_held_back(), name="reconcile-later")
        return self.state

    async def _settle_held_back(self) -> None:
        """Passes until nothing is held back: each once the life this server replaced has
        been fenced where it ran. Nothing tells us when that is done (its supervisor may be on
        another host): waiting on the clock is the point, as for a lease."""
        while self._held_back:
            left = (self.attempts.lease.inherited_until or 0.0) - self.attempts.clock.now()
            if left > 0:
                await asyncio.sleep(left)
                continue
            await self.run(skip_own=True)  # the dispatcher runs: its launches are its own

    def needed(self, why: str) -> None:
        """Something only a pass can settle happened (an attempt's end could not be recorded):
        readiness says so until a retry pass has settled it."""
        self._needed = why
        self.state = ReconcileState(ok=False, error=why, at=time.time(), failed=self.state.failed)
        self._arm_retry()

    def _arm_retry(self) -> None:
        if self._retry is None or self._retry.done():
            self._retry = asyncio.create_task(self._retry_until_ok(), name="reconcile-retry")

    def poke(self) -> None:
        """Retry now if the last pass failed (cheap otherwise: called on every transition)."""
        if not self.state.ok:
            self._poked.set()

    async def _retry_until_ok(self) -> None:
        delay = self._retry_base_s
        while not self.state.ok:
            last = time.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._poked.wait()
            # poked early: still min_gap_s between passes, so a stream of pokes cannot turn a
            # lasting failure (one run's store write) into a busy loop
            gap = self._min_gap_s - (time.monotonic() - last)
            if gap > 0:
                await asyncio.sleep(gap)
            delay = min(delay * 2, self._retry_max_s)
            # cleared as the pass begins, not before the wait: a poke while a pass runs (and
            # then fails) asks for the next one, which a clear after it threw away
            self._poked.clear()
            log.info("reconcile_retry", error=self.state.error)
            # the dispatcher runs meanwhile: what it launched itself is its own to settle
            await self.run(skip_own=True)

    async def stop(self) -> None:
        for task in (self._retry, self._later):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
