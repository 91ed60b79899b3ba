"""Dispatch: take queued runs into free slots, start their attempts, record how they end.

Woken by events (submit, exit, cancel, the earliest backoff expiry), never by a polling sleep.
It alone counts what runs, so capacity and per-job concurrency are never exceeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any

import structlog

from runyard import failpoints
from runyard.clock import Clock
from runyard.execution.executor import Launch, LaunchError, LocalExecutor
from runyard.execution.protocol import ExitRecord, UnreadableExit
from runyard.execution.supervisor_client import SupervisorUnavailableError
from runyard.jobs import JobRegistry
from runyard.jobs.spec import JobSpec
from runyard.models import Claim, Run, RunState, attempt_key, parse_attempt_key
from runyard.services import outcomes
from runyard.store import Store
from runyard.store.base import AttemptEnd

log = structlog.get_logger(__name__)

TransitionListener = Callable[[Run, RunState], None]
AttemptHook = Callable[[str, int], Awaitable[None]]
StartHook = Callable[[str, int, bool], Awaitable[None]]  # run id, attempt, fresh (not adopted)


def _limits(spec: JobSpec) -> dict[str, object] | None:
    """The job's limits, or None when it sets none (on_log_cap alone limits nothing)."""
    limits = spec.limits.model_dump(exclude_none=True)
    return limits if set(limits) - {"on_log_cap"} else None


class Dispatcher:
    def __init__(
        self,
        store: Store,
        executor: LocalExecutor,
        registry: JobRegistry,
        *,
        capacity: int,
        clock: Clock,
        host: str,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.registry = registry
        self.capacity = capacity
        self.clock = clock
        self.host = host  # this server's id: attempts it claims carry it
        self.token: str | None = None  # its lease token: fences what it writes (membership)
        self.rng = rng or random.Random()  # noqa: S311  jitter, not secrets
        self.running: Counter[str] = Counter()
        self.listeners: list[TransitionListener] = []
        self.on_started: list[StartHook] = []  # its program runs (new or re-adopted)
        # its end is about to be recorded: (run id, attempt, progress file size or None)
        self.before_end: list[Callable[[str, int, int | None], Awaitable[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._due: asyncio.TimerHandle | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self.paused = False
        # What this dispatcher claimed, kept for its attempt's life so that starting and ending
        # it need not read back what was just written; the store stays the truth for the rest.
        self._claimed: dict[str, Run] = {}
        self._specs: dict[str, tuple[dict[str, object], JobSpec]] = {}
        self.cancel_pending: set[str] = set()
        self._spawned: dict[str, bool] = {}  # launches whose program exists
        self._ended: dict[str, set[asyncio.Event]] = {}
        self._finish_times: deque[float] = deque(maxlen=200)
        self._mine: set[str] = set()  # attempts counted in `running`

    @property
    def active(self) -> int:
        return sum(self.running.values())

    async def idle(self) -> None:
        """Return once nothing is running."""
        await self._idle.wait()

    async def start(self) -> None:
        self.running = Counter(await self.store.count_active_by_job(self.host))
        self._mine = {a.key for a in await self.store.active_attempts(self.host)}
        if not self.active:
            self._idle.set()
        self._task = asyncio.create_task(self._loop(), name="dispatcher")
        self.wake()

    async def stop(self) -> None:
        if self._due is not None:
            self._due.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._inflight):
            with contextlib.suppress(Exception):
                await task

    def wake(self) -> None:
        self._wake.set()

    async def wait_for_end(self, run_id: str, seconds: float) -> None:
        """Return when the run reaches a terminal state, or after `seconds`."""
        event = asyncio.Event()
        waiters = self._ended.setdefault(run_id, set())
        waiters.add(event)
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            pass
        finally:
            waiters.discard(event)
            if not waiters:
                self._ended.pop(run_id, None)

    def ended_elsewhere(self, run_id: str) -> None:
        """Another server recorded the end of this run: wake whoever waits for it here."""
        for waiter in self._ended.pop(run_id, set()):
            waiter.set()

    def finish_rate(self) -> float:
        """Runs finished per second, over the last (up to) 200 ends."""
        if len(self._finish_times) < 2:
            return 0.0
        span = self._finish_times[-1] - self._finish_times[0]
        return (len(self._finish_times) - 1) / span if span > 0 else 0.0

    def notify(self, run: Run, previous: RunState) -> None:
        log.info(
            "run_transition",
            run_id=run.id,
            job=run.job,
            attempt=run.attempt,
            **{"from": previous.value, "to": run.state.value},
            reason=run.reason,
        )
        if run.state.terminal:
            self._finish_times.append(time.monotonic())
            for waiter in self._ended.pop(run.id, set()):
                waiter.set()
        for listener in self.listeners:
            listener(run, previous)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.paused:
                continue
            try:
                await self._dispatch()
            except Exception:
                log.exception("dispatch_failed")
                # the store may be busy: try again shortly rather than stall the queue
                asyncio.get_running_loop().call_later(0.5, self.wake)

    async def _dispatch(self) -> None:
        while (free := self.capacity - self.active) > 0:
            snapshot = await self.registry.snapshot()
            slots = {
                name: job.spec.concurrency - self.running[name]
                for name, job in snapshot.jobs.items()
                if job.spec.concurrency is not None
            }
            claims = await self.store.claim(free, slots, self.clock.now(), self.host, self.token)
            for claim in claims:
                self._idle.clear()
                self._mine.add(claim.attempt.key)
                self._claimed[claim.run.id] = claim.run
                self.running[claim.run.job] += 1
                self.notify(claim.run, RunState.QUEUED)
                self._spawn(self._launch(claim))
            if len(claims) < free:
                break
        await self._arm_due_timer()

    async def _arm_due_timer(self) -> None:
        due = await self.store.next_due()
        if self._due is not None:
            self._due.cancel()
            self._due = None
        if due is not None:
            delay = max(0.0, due - self.clock.now())
            self._due = asyncio.get_running_loop().call_later(delay, self.wake)

    def launched(self, run_id: str, number: int) -> bool:
        """Whether this dispatcher claimed that attempt itself and has not yet recorded its
        end: its start and its end are the dispatcher's own to record."""
        run = self._claimed.get(run_id)
        return run is not None and run.attempt == number

    def spec_of(self, run: Run) -> JobSpec:
        """The run's job spec, parsed once per distinct spec rather than once per use."""
        cached = self._specs.get(run.job)
        if cached is not None and cached[0] == run.spec:
            return cached[1]
        spec = JobSpec.model_validate(run.spec)
        self._specs[run.job] = (run.spec, spec)
        return spec

    async def _launch(self, claim: Claim) -> None:
        try:
            await self._start(claim)
        except Exception as exc:
            # Never let a claimed attempt hold its slot in silence: an error before the spawn
            # re-queues the run as never started (after its exit, the exit record ends it).
            log.exception("launch_failed", run_id=claim.run.id, attempt=claim.attempt.number)
            if claim.run.id in self._claimed and not self._spawned.get(claim.run.id):
                end = outcomes.not_started(self.clock.now(), f"launch failed: {exc}")
                with contextlib.suppress(Exception):
                    await self.end(claim.run, claim.attempt.number, end)
        finally:
            self._spawned.pop(claim.run.id, None)

    async def _start(self, claim: Claim) -> None:
        run, number = claim.run, claim.attempt.number
        spec = self.spec_of(run)
        launch = Launch(
            run_id=run.id,
            attempt=number,
            command=spec.command,
            params=run.params,
            workspace=spec.workspace,
            env=spec.env,
            timeout_s=spec.timeout_s,
            kill_grace_s=spec.kill_grace_s,
            limits=_limits(spec),
            run_as=spec.run_as,
        )
        failpoints.hit("before_spawn")
        try:
            started = await self.executor.launch(launch)
        except SupervisorUnavailableError as exc:
            end = outcomes.not_started(self.clock.now(), f"the supervisor went away ({exc})")
            await self.end(run, number, end)
            return
        except LaunchError as exc:
            record = ExitRecord(
                key=claim.attempt.key, pid=None, exit_code=None, signal=None,
                killed_by=None, started_at=None, ended_at=self.clock.now(), error=str(exc),
            )  # fmt: skip
            await self.attempt_exited(record)
            return
        if started is None:
            return  # could not start: the supervisor's exit record is on its way
        self._spawned[run.id] = True
        failpoints.hit("after_spawn")
        # Written before anything else happens: recovery tells a program that ran from one that
        # never started by this record (a `starting` attempt is re-queued as never run).
        await self.store.attempt_started(
            run.id,
            number,
            pid=started.pid,
            pgid=started.pgid,
            proc_start_time=started.start_time,
            at=started.started_at,
        )
        await self._hooks(self.on_started, run.id, number, True)
        if run.id in self.cancel_pending:
            await self.executor.cancel(run.id, number)  # cancel came while we were starting

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def adopted(self, run_id: str, number: int) -> None:
        await self._hooks(self.on_started, run_id, number, False)

    @staticmethod
    async def _hooks(hooks: list[Callable[..., Awaitable[None]]], *args: object) -> None:
        run_id, number = args[0], args[1]
        for hook in hooks:
            try:
                await hook(*args)
            except Exception:
                # streams are a view: a failure there must never stop a run being recorded
                log.exception("attempt_hook_failed", run_id=run_id, attempt=number)

    async def attempt_exited(self, record: ExitRecord | UnreadableExit) -> None:
        """An attempt ended (event, exit file or failed launch): record it exactly once.
        An unreadable record ends it `lost`: it ended, but nobody can say how."""
        run_id, number = parse_attempt_key(record.key)
        run = self._claimed.get(run_id)
        if run is None or run.attempt != number:
            run = await self.store.get_run(run_id)  # adopted, or learned from an exit file
        if run is None or run.attempt != number or run.state is not RunState.RUNNING:
            return
        if run_id in self.cancel_pending and not run.cancel_requested:
            run = replace(run, cancel_requested=True)
        spec = self.spec_of(run)
        if isinstance(record, UnreadableExit):
            end, progress = outcomes.lost(run, spec, self.clock.now(), self.rng, record.why), None
        else:
            end, progress = outcomes.decide(record, run, spec, self.rng), record.progress_bytes
        failpoints.hit("before_end")
        await self.end(run, number, end, progress)

    async def attempt_lost(self, run: Run, number: int, why: str) -> None:
        spec = self.spec_of(run)
        await self.end(run, number, outcomes.lost(run, spec, self.clock.now(), self.rng, why))

    async def attempt_not_started(self, run: Run, number: int, why: str) -> None:
        await self.end(run, number, outcomes.not_started(self.clock.now(), why))

    async def end(
        self, run: Run, number: int, end: AttemptEnd, progress_bytes: int | None = None
    ) -> None:
        await self._hooks(self.before_end, run.id, number, progress_bytes)
        updated = await self.store.end_attempt(run.id, number, end, token=self.token)
        key = attempt_key(run.id, number)
        counted = key in self._mine
        self._mine.discard(key)
        if updated is None:
            # already recorded from the other source (event vs exit file), or fenced: our
            # lease lapsed and another server declared the attempt lost; either way its
            # program is over here, and so is its slot
            if counted:
                log.warning("attempt_end_fenced", run_id=run.id, attempt=number)
                self._claimed.pop(run.id, None)
                self._release(run.job)
                self.wake()
            return
        self._claimed.pop(run.id, None)
        if updated.state.terminal:
            self.cancel_pending.discard(run.id)
        self._release(run.job)
        self.notify(updated, RunState.RUNNING)
        self.wake()

    def _release(self, job: str) -> None:
        self.running[job] -= 1
        if self.running[job] <= 0:
            del self.running[job]
        if not self.active:
            self._idle.set()

    async def reap(self, run: Run, number: int, token: str | None, why: str) -> None:
        """Another server's attempt whose lease expired: lost, retried here or elsewhere per
        its job's policy. Only if it is still held under that (stale) lease: a server that
        came back in time, or another reaper, may have settled it first."""
        end = outcomes.lost(run, self.spec_of(run), self.clock.now(), self.rng, why)
        updated = await self.store.end_attempt(run.id, number, end, token=token)
        if updated is not None:
            self.notify(updated, RunState.RUNNING)
            self.wake()
