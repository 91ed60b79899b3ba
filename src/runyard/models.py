"""Runs and attempts as plain data, and the one table of legal state transitions."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any


class RunState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.TIMED_OUT}
)

# Every state write goes through this table. running -> queued is a retry (or a lost attempt
# re-queued); terminal states have no way out.
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.RUNNING, RunState.CANCELLED, RunState.FAILED}),
    RunState.RUNNING: frozenset({RunState.QUEUED, *TERMINAL_STATES}),
    **{s: frozenset() for s in TERMINAL_STATES},
}


class IllegalTransitionError(Exception):
    def __init__(self, run_id: str, current: RunState, target: RunState) -> None:
        super().__init__(f"run {run_id}: {current} -> {target} is not a legal transition")
        self.run_id = run_id
        self.current = current
        self.target = target


def check_transition(run_id: str, current: RunState, target: RunState) -> None:
    if target not in TRANSITIONS[current]:
        raise IllegalTransitionError(run_id, current, target)


class AttemptState(enum.StrEnum):
    STARTING = "starting"  # recorded, process not spawned yet
    RUNNING = "running"
    EXITED = "exited"  # program ended (any exit code or signal)
    LOST = "lost"  # program vanished with its supervisor; no exit status known
    FAILED_TO_START = "failed_to_start"


@dataclass(slots=True)
class Run:
    id: str
    job: str
    params: dict[str, Any]
    state: RunState
    priority: int
    created_at: float
    labels: dict[str, str] = field(default_factory=dict)
    batch_id: str | None = None
    schedule_id: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    attempt: int = 0
    exit_code: int | None = None
    reason: str | None = None
    progress: dict[str, Any] | None = None
    not_before: float | None = None
    cancel_requested: bool = False
    spec: dict[str, Any] = field(default_factory=dict)  # the job as it was when submitted
    progress_skipped: int = 0  # malformed or oversized progress lines, counted not fatal


@dataclass(slots=True)
class Attempt:
    run_id: str
    number: int
    state: AttemptState
    created_at: float
    host: str
    pid: int | None = None
    pgid: int | None = None
    proc_start_time: float | None = None  # identifies the process beyond its (reusable) pid
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    outcome: str | None = None  # why it ended: exit, cancel, timeout, lost, spawn error
    peak_rss_kb: int | None = None
    lease_token: str | None = None  # the claiming server's lease when it claimed (fencing)

    @property
    def key(self) -> str:
        return attempt_key(self.run_id, self.number)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """A member of the cluster: where to reach it, and the lease it holds."""

    id: str
    url: str
    token: str
    capacity: int
    started_at: float
    heartbeat_at: float
    lease_expires_at: float


def attempt_key(run_id: str, number: int) -> str:
    return f"{run_id}.{number}"


def parse_attempt_key(key: str) -> tuple[str, int]:
    run_id, _, number = key.rpartition(".")
    return run_id, int(number)


@dataclass(slots=True, frozen=True)
class RunFilter:
    job: str | None = None
    state: RunState | None = None
    labels: tuple[tuple[str, str], ...] = ()
    batch_id: str | None = None
    cursor: str | None = None  # keyset: runs with id < cursor (newest first)
    limit: int = 50


@dataclass(slots=True, frozen=True)
class Batch:
    id: str
    job: str
    size: int
    created_at: float
    request: dict[str, Any]
    idempotency_key: str | None = None


@dataclass(slots=True)
class Schedule:
    id: str
    job: str
    params: dict[str, Any]
    priority: int | None
    labels: dict[str, str]
    cron: str | None
    interval_s: float | None
    overlap: str  # skip | queue | allow
    catch_up: str  # once | none
    paused: bool
    created_at: float
    last_fired_at: float | None = None
    fire_count: int = 0
    skip_count: int = 0
    last_run_id: str | None = None
    next_fire_at: float | None = None
    pending: bool = False  # overlap=queue: one fire waits for the previous run to end
    fail_count: int = 0  # fires that made no run: its job gone, its params refused, no room
    last_error: str | None = None  # why the last fire made no run; None once one does
    version: int = 0  # of the stored row this copy was read from (0: never stored)


@dataclass(slots=True, frozen=True)
class Claim:
    """A queued run the dispatcher took, with the attempt recorded for it."""

    run: Run
    attempt: Attempt


@dataclass(slots=True, frozen=True)
class ClaimAsk:
    """What an attempt's end may claim in its own transaction for the slot it frees: up to
    `limit` runs, at most `room[job]` of a job with a concurrency limit, for `host` under its
    lease `token`. `generation` is the dispatcher queue's when asked."""

    limit: int
    room: dict[str, int]
    now: float
    host: str
    token: str | None
    generation: int


@dataclass(slots=True, frozen=True)
class RunEvent:
    """One numbered event of a run: a state change or a progress report."""

    run_id: str
    seq: int
    at: float
    kind: str  # "state" or "progress"
    data: dict[str, Any]


def state_event(run: Run, previous: RunState | None) -> dict[str, Any]:
    return {
        "from": None if previous is None else previous.value,
        "to": run.state.value,
        "attempt": run.attempt,
        "exit_code": run.exit_code,
        "reason": run.reason,
    }


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """How an attempt ended, and what that makes of its run."""

    attempt_state: AttemptState
    ended_at: float
    run_state: RunState  # queued for a retry, else terminal
    reason: str
    outcome: str
    exit_code: int | None = None
    signal: int | None = None
    peak_rss_kb: int | None = None
    not_before: float | None = None  # retry backoff
    pid: int | None = None  # known from the exit record even if the start was never recorded
    started_at: float | None = None

    def honouring_cancel(self, cancel_requested: bool) -> AttemptEnd:
        """This end, or, if it would queue its run again (a retry, a re-queue) and the run's
        cancel was accepted, its end as `cancelled`: a cancel answered 202 while its attempt
        was lost (its server paused past its lease) was forgotten, the retry ran the program
        again in full, and its ordinary end was then recorded as the cancel. The store applies
        it too, under the run's lock: a cancel accepted after the end's caller read the run."""
        if not cancel_requested or self.run_state is not RunState.QUEUED:
            return self
        why = (self.reason or "").split("; retrying in ", 1)[0]  # nothing is retried now
        return replace(
            self, run_state=RunState.CANCELLED, reason=f"cancelled on request ({why})",
            not_before=None,
        )  # fmt: skip

    def damaged(self, why: str) -> AttemptEnd:
        """This end of an attempt whose run's stored record was damaged while it ran: the run
        fails, saying why, however the attempt ended (nothing can be retried of a run that
        cannot be read)."""
        return replace(
            self, run_state=RunState.FAILED, reason=f"{why}: it cannot go on", not_before=None
        )


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a run listing, newest first, and the cursor of the next one."""

    runs: list[Run]
    next_cursor: str | None
