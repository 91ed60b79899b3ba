"""The Store contract over SQL, once for every backend: each method runs one unit of logic.py
in a transaction that reads or one that writes. A backend supplies only those transactions:
its connection, dialect (named queries), error mapping and notifications."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from functools import partial
from typing import Any, TypeVar

from runyard.errors import RunyardError
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
from runyard.store import held, known, leases, logic
from runyard.store import progress as progress_units
from runyard.store.base import Store
from runyard.store.units import Make

T = TypeVar("T")

COMMIT = "store_commit"  # the failpoint of a store write
PROGRESS = "progress"  # the failpoint of recording progress


class SQLStore(Store):
    def __init__(self) -> None:
        # Why writes failed on storage, by failpoint, until one there succeeds: readiness
        # reports them and probes whether they have cleared.
        self.write_errors: dict[str, str] = {}

    @abc.abstractmethod
    async def _read(self, make: Make[T]) -> T:
        """Run the unit `make` makes where it sees committed data and writes nothing."""

    @abc.abstractmethod
    async def _write(self, make: Make[T], point: str = COMMIT) -> T:
        """Run the unit `make` makes in one write transaction whose commit is the failpoint
        `point` (again, from the start, if that transaction had to be undone)."""

    def _failed(self, error: RunyardError, point: str) -> RunyardError:
        self.write_errors[point] = error.detail
        return error

    def _written(self, point: str) -> None:
        if self.write_errors:
            self.write_errors.pop(point, None)

    # -- the Store contract, in its order ---------------------------------------------------

    async def insert_run(self, run: Run) -> tuple[Run, bool]:
        return await self._write(partial(logic.insert_run, run))

    async def insert_batch(self, batch: Batch, runs: list[Run]) -> tuple[Batch, bool]:
        return await self._write(partial(logic.insert_batch, batch, runs))

    async def get_batch_by_key(self, key: str) -> Batch | None:
        return await self._read(partial(logic.get_batch_by_key, key))

    async def get_batch(self, batch_id: str) -> Batch | None:
        return await self._read(partial(logic.get_batch, batch_id))

    async def list_batches(self, before: str | None, limit: int) -> list[Batch]:
        return await self._read(partial(logic.list_batches, before, limit))

    async def batch_counts(self, batch_id: str) -> dict[str, int]:
        return await self._read(partial(logic.batch_counts, batch_id))

    async def batch_run_ids(self, batch_id: str, state: RunState) -> list[str]:
        return await self._read(partial(logic.batch_run_ids, batch_id, state))

    async def save_schedule(
        self, schedule: Schedule, run: Run | None = None, at_most: int | None = None
    ) -> None:
        await self._write(partial(logic.save_schedule, schedule, run, at_most))

    async def list_schedules(self) -> list[Schedule]:
        return await self._read(partial(logic.list_schedules))

    async def delete_schedule(self, schedule_id: str) -> bool:
        return await self._write(partial(logic.delete_schedule, schedule_id))

    async def get_run(self, run_id: str) -> Run | None:
        return await self._read(partial(logic.get_run, run_id))

    async def get_run_by_idempotency_key(self, key: str) -> Run | None:
        return await self._read(partial(logic.get_run_by_idempotency_key, key))

    async def list_runs(self, flt: RunFilter) -> Page:
        return await self._read(partial(logic.list_runs, flt))

    async def count_runs(self, state: RunState, job: str | None = None) -> int:
        return await self._read(partial(logic.count_runs, state, job))

    async def counts_by_job(self, state: RunState) -> dict[str, int]:
        return await self._read(partial(logic.counts_by_job, state))

    async def claim(
        self, limit: int, job_slots: Mapping[str, int], now: float, host: str,
        token: str | None = None,
    ) -> list[Claim]:  # fmt: skip
        if limit <= 0:  # no transaction (and no commit to fail) for nothing to take
            return []
        return await self._write(partial(logic.claim, limit, job_slots, now, host, token))

    async def next_due(self, now: float) -> float | None:
        return await self._read(partial(logic.next_due, now))

    async def attempts_started(
        self, started: list[tuple[str, int, int, int, float, float]]
    ) -> None:
        await self._write(partial(logic.attempts_started, started))

    async def end_attempt(
        self,
        run_id: str,
        number: int,
        end: AttemptEnd,
        token: str | None = None,
        by: str | None = None,
    ) -> Run | None:
        return await self._write(partial(logic.end_attempt, run_id, number, end, token, by))

    async def end_and_claim(
        self, run_id: str, number: int, end: AttemptEnd, token: str | None, ask: ClaimAsk
    ) -> tuple[Run | None, list[Claim]]:
        return await self._write(partial(logic.end_and_claim, run_id, number, end, token, ask))

    async def cancel_queued(self, run_id: str, at: float, reason: str) -> Run | None:
        return await self._write(partial(logic.cancel_queued, run_id, at, reason))

    async def cancel_queued_of_batch(self, batch_id: str, at: float, reason: str) -> list[Run]:
        return await self._write(partial(logic.cancel_queued_of_batch, batch_id, at, reason))

    async def request_cancel(self, run_id: str) -> Run | None:
        return await self._write(partial(logic.request_cancel, run_id))

    async def expired(
        self, now: float, limit: int, after: tuple[float, str] | None = None
    ) -> list[tuple[str, float]]:
        return await self._read(partial(logic.removable, "EXPIRED", now, limit, after))

    async def untimed_before(
        self, before: float, limit: int, after: tuple[float, str] | None = None
    ) -> list[tuple[str, float]]:
        return await self._read(partial(logic.removable, "UNTIMED_BEFORE", before, limit, after))

    async def delete_run(self, run_id: str) -> bool:
        return await self._write(partial(logic.delete_run, run_id))

    async def get_attempts(self, run_id: str) -> list[Attempt]:
        return await self._read(partial(logic.get_attempts, run_id))

    async def last_attempts(self, run_ids: list[str]) -> dict[str, int | None]:
        return await self._read(partial(known.last_attempts, run_ids))

    async def active_attempts(self, host: str | None = None) -> list[Attempt]:
        return await self._read(partial(logic.active_attempts, host))

    async def held_attempts(self, host: str) -> list[tuple[str, str]]:
        return await self._read(partial(held.held_attempts, host))

    async def register_server(
        self, server_id: str, url: str, capacity: int, now: float, lease_s: float,
        instance: str | None = None, holding: str | None = None,
    ) -> tuple[str, float | None]:  # fmt: skip
        return await self._write(
            partial(
                leases.register_server, server_id, url, capacity, now, lease_s, instance, holding
            )
        )

    async def renew_server(self, server_id: str, token: str, now: float, lease_s: float) -> bool:
        return await self._write(partial(leases.renew_server, server_id, token, now, lease_s))

    async def live_servers(self, now: float) -> list[ServerInfo]:
        return await self._read(partial(leases.live_servers, now))

    async def orphaned_attempts(self, now: float) -> list[Attempt]:
        return await self._read(partial(leases.orphaned_attempts, now))

    async def set_progress(self, run_id: str, progress: dict[str, Any]) -> None:
        await self._write(partial(logic.set_progress, run_id, progress), PROGRESS)

    async def add_progress(
        self,
        run_id: str,
        attempt: int,
        events: list[tuple[float, dict[str, Any]]],
        *,
        offset: int,
        skipped: int,
    ) -> None:
        await self._write(
            partial(progress_units.add_progress, run_id, attempt, events, offset, skipped), PROGRESS
        )

    async def progress_offset(self, run_id: str, attempt: int) -> int:
        return await self._read(partial(progress_units.progress_offset, run_id, attempt))

    async def list_events(
        self, run_id: str, after: int, limit: int = 1000, max_bytes: int | None = None
    ) -> list[RunEvent]:
        return await self._read(
            partial(progress_units.list_events, run_id, after, limit, max_bytes)
        )

    async def last_event_seq(self, run_id: str) -> int:
        return await self._read(partial(progress_units.last_event_seq, run_id))
