"""The store contract every backend implements and the contract test suite checks."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any

from runyard.models import (
    Attempt,
    AttemptEnd,
    Batch,
    Claim,
    ClaimAsk,
    Page,
    Run,
    RunEvent,
    RunFilter,
    RunState,
    Schedule,
    ServerInfo,
)


class Store(abc.ABC):
    """Every write checks the transition table; every method is one short transaction.

    Implementations list their methods in this order."""

    # Whether a claim that took fewer runs than it was asked for has seen every queued run,
    # so that nothing more is claimable until the queue changes: true of SQLite's one writer.
    # PostgreSQL's claim skips rows other transactions hold (SKIP LOCKED): a run locked for a
    # moment by a progress write or another server's rolled-back claim is claimable again
    # with no notice, so there a short claim proves nothing (services/wakeup.py).
    claims_see_every_run: bool = False

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise if the database cannot be reached."""

    async def health_problems(self) -> dict[str, str]:
        """Readiness beyond reachability (check -> why): a write failed and still fails, the
        database file is not the one opened. Nothing to say by default."""
        return {}

    @abc.abstractmethod
    async def insert_run(self, run: Run) -> tuple[Run, bool]:
        """Store a new queued run. With an idempotency key already taken, return
        (the existing run, False) and store nothing."""

    @abc.abstractmethod
    async def insert_batch(self, batch: Batch, runs: list[Run]) -> tuple[Batch, bool]:
        """Store a batch and all its runs in one transaction: all of them or none. With the
        batch's idempotency key already taken, return (the batch that took it, False) and
        store nothing."""

    @abc.abstractmethod
    async def get_batch_by_key(self, key: str) -> Batch | None: ...

    @abc.abstractmethod
    async def get_batch(self, batch_id: str) -> Batch | None: ...

    @abc.abstractmethod
    async def list_batches(self, before: str | None, limit: int) -> list[Batch]:
        """Newest first; `before` is the last id of the previous page (keyset)."""

    @abc.abstractmethod
    async def batch_counts(self, batch_id: str) -> dict[str, int]:
        """The batch's runs, counted by state."""

    @abc.abstractmethod
    async def batch_run_ids(self, batch_id: str, state: RunState) -> list[str]: ...

    @abc.abstractmethod
    async def save_schedule(
        self, schedule: Schedule, run: Run | None = None, at_most: int | None = None
    ) -> None:
        """Write the schedule's whole row: a new one (version 0), or over the version it was
        read from, which the store then moves on by one; StaleWriteError, and nothing
        written, when the stored row is at another version or gone. With `run`, insert that
        run in the same transaction (a fire: the run and the schedule's new state, or
        neither). A new one with `at_most`: ScheduleLimitError, and nothing written, when
        that many are stored (counted with no other create between the count and the
        insert: servers sharing a database each counted their own and passed it)."""

    @abc.abstractmethod
    async def list_schedules(self) -> list[Schedule]: ...

    @abc.abstractmethod
    async def delete_schedule(self, schedule_id: str) -> bool: ...

    @abc.abstractmethod
    async def get_run(self, run_id: str) -> Run | None: ...

    @abc.abstractmethod
    async def get_run_by_idempotency_key(self, key: str) -> Run | None: ...

    @abc.abstractmethod
    async def list_runs(self, flt: RunFilter) -> Page: ...

    @abc.abstractmethod
    async def count_runs(self, state: RunState, job: str | None = None) -> int: ...

    @abc.abstractmethod
    async def counts_by_job(self, state: RunState) -> dict[str, int]: ...

    @abc.abstractmethod
    async def claim(
        self, limit: int, job_slots: Mapping[str, int], now: float, host: str,
        token: str | None = None,
    ) -> list[Claim]:  # fmt: skip
        """Take up to `limit` due queued runs, highest priority first then oldest, skipping
        jobs with 0 in `job_slots` and taking at most `job_slots[job]` of a job (jobs absent
        from it are unlimited). Each is moved to running with a new attempt in `starting`,
        claimed by `host` under its lease `token`."""

    @abc.abstractmethod
    async def next_due(self, now: float) -> float | None:
        """The earliest `not_before` after `now` of a queued run: when the next run still
        backing off becomes claimable. One whose backoff is over is claimable already; a slot
        freeing wakes the dispatcher for it (a past time here would wake it for nothing)."""

    async def attempt_started(
        self, run_id: str, number: int, *, pid: int, pgid: int, proc_start_time: float, at: float
    ) -> None:
        await self.attempts_started([(run_id, number, pid, pgid, proc_start_time, at)])

    @abc.abstractmethod
    async def attempts_started(
        self, started: list[tuple[str, int, int, int, float, float]]
    ) -> None:
        """Record (run id, attempt, pid, pgid, process start time, started at) of programs that
        were spawned, in one transaction. An attempt that already ended is left as it is."""

    @abc.abstractmethod
    async def end_attempt(
        self,
        run_id: str,
        number: int,
        end: AttemptEnd,
        token: str | None = None,
        by: str | None = None,
    ) -> Run | None:
        """Record the end of an attempt and move its run; None when that attempt had already
        ended (outcomes can be learned twice: from an event and from the exit file) or, with
        `token`, when the attempt is not held under that lease any more (fencing). `by` is
        the server recording it when that is not the attempt's own (a reaper): other servers
        hear the change from it, and the attempt's own server, if it comes back, too."""

    @abc.abstractmethod
    async def end_and_claim(
        self, run_id: str, number: int, end: AttemptEnd, token: str | None, ask: ClaimAsk
    ) -> tuple[Run | None, list[Claim]]:
        """`end_attempt`, then, if it ended the attempt, `claim` as `ask` says, in one
        transaction: a failure undoes both."""

    @abc.abstractmethod
    async def cancel_queued(self, run_id: str, at: float, reason: str) -> Run | None:
        """End a queued run as cancelled; None if it is no longer queued."""

    @abc.abstractmethod
    async def cancel_queued_of_batch(self, batch_id: str, at: float, reason: str) -> list[Run]:
        """`cancel_queued` of every queued run of the batch, at once: those it cancelled."""

    @abc.abstractmethod
    async def request_cancel(self, run_id: str) -> Run | None:
        """Flag a running run for cancellation; None if it is not running."""

    @abc.abstractmethod
    async def expired(
        self, now: float, limit: int, after: tuple[float, str] | None = None
    ) -> list[tuple[str, float]]:
        """(id, expiry) of ended runs whose job, as each stored it, has a `retention_s` that
        has passed by `now` (expiry: finished_at + retention_s), soonest expired first (by
        expiry, then id), after the run `after` names by its (expiry, id)."""

    @abc.abstractmethod
    async def untimed_before(
        self, before: float, limit: int, after: tuple[float, str] | None = None
    ) -> list[tuple[str, float]]:
        """(id, finished_at) of ended runs whose job has no `retention_s` of its own and that
        ended before `before`, oldest first, after the run `after` names by (finished_at, id)."""

    @abc.abstractmethod
    async def delete_run(self, run_id: str) -> bool:
        """Delete a finished run and its attempts; False if it is not finished."""

    @abc.abstractmethod
    async def get_attempts(self, run_id: str) -> list[Attempt]: ...

    @abc.abstractmethod
    async def last_attempts(self, run_ids: list[str]) -> dict[str, int | None]:
        """{run id: its last attempt's number (0: none yet; None: finished)} for the runs of
        `run_ids` it has."""

    @abc.abstractmethod
    async def active_attempts(self, host: str | None = None) -> list[Attempt]:
        """Attempts starting or running (on `host`): what a restarted server reconciles."""

    @abc.abstractmethod
    async def held_attempts(self, host: str) -> list[tuple[str, str]]:
        """(attempt key, job) of the attempts starting or running on `host`, in one read:
        the slots a restarted server holds."""

    # -- membership -------------------------------------------------------------------------

    async def listen(self, handlers: Mapping[str, Callable[[str], None]]) -> None:
        """Call handlers[channel](payload) when another server changes something (the
        channels of store/logic.py): `runyard_queue` (runs to claim), `runyard_run`
        ("ID STATE SERVER", SERVER the one that wrote the change), `runyard_schedules` (a
        schedule's id). Once listening, each handler is called with "" for whatever was said
        before. A store only one server uses has nobody else to hear from."""
        return

    async def try_lead(self, server_id: str | None = None, life: str | None = None) -> bool:
        """Whether this server (`server_id`, in its life `life`: its lease token) is (still)
        the one that fires schedules. A leader whose own lease has lapsed (paused, cut off),
        or whose id another life holds now, is replaced."""
        return True

    async def stand_down(self) -> None:
        """Lead no more (a life whose lease lapsed, or was taken over): another may at once."""
        return

    @abc.abstractmethod
    async def register_server(
        self, server_id: str, url: str, capacity: int, now: float, lease_s: float,
        instance: str | None = None, holding: str | None = None,
    ) -> tuple[str, float | None]:  # fmt: skip
        """Join (or rejoin) the cluster as a new life: a token of its own (the process it
        replaces, if alive, can renew no more), which holds from now on every attempt of the
        id still starting or running. Returns the token and when the lease of the life it
        replaced ended (None: the id's first): until then, and a margin, what that life ran
        may still run where it ran. ServerIdTakenError while the id's lease lasts and another
        `instance` (host and data directory) holds it, or, for a process that held the id
        (`holding`: its last token), another life took it over since."""

    @abc.abstractmethod
    async def renew_server(self, server_id: str, token: str, now: float, lease_s: float) -> bool:
        """Extend the lease; False when it had expired or the token is not current."""

    @abc.abstractmethod
    async def live_servers(self, now: float) -> list[ServerInfo]: ...

    @abc.abstractmethod
    async def orphaned_attempts(self, now: float) -> list[Attempt]:
        """Active attempts whose claiming lease is not a live server's current one."""

    @abc.abstractmethod
    async def set_progress(self, run_id: str, progress: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    async def add_progress(
        self,
        run_id: str,
        attempt: int,
        events: list[tuple[float, dict[str, Any]]],
        *,
        offset: int,
        skipped: int,
    ) -> None:
        """Record progress lines read from an attempt's progress file up to `offset`: each
        becomes an event while the run has fewer than MAX_RUN_EVENTS (progress.py), the last is
        the run's `progress`, `skipped` adds to the count."""

    @abc.abstractmethod
    async def progress_offset(self, run_id: str, attempt: int) -> int: ...

    @abc.abstractmethod
    async def list_events(
        self, run_id: str, after: int, limit: int = 1000, max_bytes: int | None = None
    ) -> list[RunEvent]:
        """Events with seq > after, in order; with `max_bytes`, no more once their data's
        text has reached it (one at least). State changes are written by the same
        transaction as the change itself."""

    @abc.abstractmethod
    async def last_event_seq(self, run_id: str) -> int: ...
