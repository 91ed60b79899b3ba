"""The PostgreSQL store: psycopg 3, an async connection pool, one transaction per method.

For several servers over one database: claims take rows with FOR UPDATE SKIP LOCKED, a run's
events are numbered under its row lock, and migrations run once under an advisory lock when
servers start together. Same contract, same tests as the SQLite store.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool

from runyard import failpoints
from runyard.errors import (
    RunyardError,
    StorageFullError,
    StorageIOError,
    StoreBusyError,
    storage_error,
)
from runyard.models import (
    Attempt,
    AttemptState,
    Batch,
    Claim,
    Run,
    RunEvent,
    RunFilter,
    RunState,
    Schedule,
    ServerInfo,
    check_transition,
    state_event,
)
from runyard.store import postgres_sql as q
from runyard.store.base import AttemptEnd, Page, Store, new_token
from runyard.store.migrations import migration_files
from runyard.store.postgres_session import Handlers, Leadership, Listener
from runyard.store.rows import (
    attempt_from_row,
    attempt_to_row,
    dumps,
    loads,
    run_from_row,
    run_to_row,
    schedule_from_row,
    schedule_to_row,
)

Conn = AsyncConnection[Any]


class PostgresStore(Store):
    def __init__(self, dsn: str, *, schema: str | None = None, max_size: int = 10) -> None:
        self.dsn = dsn
        self.schema = schema
        kwargs: dict[str, Any] = {"autocommit": True}
        if schema is not None:
            kwargs["options"] = f"-c search_path={schema}"
        self.pool = AsyncConnectionPool(
            dsn, min_size=1, max_size=max_size, kwargs=kwargs, open=False
        )
        self._kwargs = kwargs
        self._listener: Listener | None = None
        self._leadership = Leadership(dsn, kwargs, q.SCHEDULER_LOCK)
        # Why writes failed on storage, by failpoint, until one there succeeds (readiness).
        self.write_errors: dict[str, str] = {}

    @asynccontextmanager
    async def _tx(self, write: str | None = None) -> AsyncIterator[Conn]:
        """One transaction; `write` names the failpoint of a transaction that writes."""
        try:
            async with self.pool.connection() as conn, conn.transaction():
                yield conn
                if write is not None:
                    failpoints.check(write)  # raising here rolls the transaction back
        except OSError as exc:
            raise self._failed(storage_error(exc, "the database"), write) from exc
        except errors.DiskFull as exc:
            raise self._failed(StorageFullError("the database's disk is full"), write) from exc
        except errors.IoError as exc:
            error = StorageIOError(f"the database cannot be written: {exc}")
            raise self._failed(error, write) from exc
        except (errors.LockNotAvailable, errors.DeadlockDetected, errors.QueryCanceled) as exc:
            raise StoreBusyError("the database is busy; try again") from exc
        if write is not None and self.write_errors:
            self.write_errors.pop(write, None)

    def _failed(self, error: RunyardError, point: str | None) -> RunyardError:
        self.write_errors[point or "store_commit"] = error.detail
        return error

    async def health_problems(self) -> dict[str, str]:
        """Readiness: after a write failed, does one go through now? (a transaction that
        takes a transaction id, so its commit is written to the WAL)."""
        failing = []
        for point in list(self.write_errors):
            try:
                async with self._tx(point) as c:
                    await c.execute("SELECT pg_current_xact_id()")
            except RunyardError as exc:
                failing.append(exc.detail)
        return {"store": "; ".join(failing)} if failing else {}

    async def open(self) -> None:
        await self.pool.open(wait=True)
        async with self._tx() as c:
            await c.execute("SELECT pg_advisory_xact_lock(%s)", (q.MIGRATION_LOCK,))
            await c.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION)"
            )
            done = {
                r[0]
                for r in await (await c.execute("SELECT version FROM schema_migrations")).fetchall()
            }
            for version, name, sql in migration_files("postgres"):
                if version not in done:
                    await c.execute(sql.encode())
                    await c.execute(
                        "INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                        (version, name, time.time()),
                    )

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
        await self._leadership.release()
        await self.pool.close()

    async def listen(self, handlers: Handlers) -> None:
        self._listener = Listener(self.dsn, self._kwargs, handlers)
        self._listener.start()
        await self._listener.connected.wait()

    async def try_lead(self) -> bool:
        return await self._leadership.try_lead()

    async def ping(self) -> None:
        async with self._tx() as c:
            await c.execute("SELECT 1")

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    async def _one(c: Conn, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        return await (await c.execute(sql, args)).fetchone()

    async def _run(self, c: Conn, run_id: str) -> Run:
        row = await self._one(c, q.GET_RUN, (run_id,))
        assert row is not None  # noqa: S101  read back inside the transaction that wrote it
        return run_from_row(row)

    @staticmethod
    async def _event(c: Conn, run_id: str, at: float, kind: str, data: dict[str, Any]) -> None:
        # the run's row is locked by this transaction, so numbering cannot race
        row = await (await c.execute(q.NEXT_EVENT_SEQ, (run_id,))).fetchone()
        assert row is not None  # noqa: S101
        await c.execute(q.INSERT_EVENT, (run_id, row[0], at, kind, dumps(data)))

    # -- runs -------------------------------------------------------------------------------

    async def insert_run(self, run: Run) -> tuple[Run, bool]:
        async with self._tx("store_commit") as c:
            inserted = await self._one(c, q.INSERT_RUN, run_to_row(run))
            if inserted is None:  # the idempotency key was taken
                row = await self._one(c, q.GET_RUN_BY_KEY, (run.idempotency_key,))
                assert row is not None  # noqa: S101
                return run_from_row(row), False
            await self._event(c, run.id, run.created_at, "state", state_event(run, None))
            await c.execute(q.NOTIFY, (q.QUEUE_CHANNEL, ""))
        return run, True

    async def get_run(self, run_id: str) -> Run | None:
        async with self._tx() as c:
            row = await self._one(c, q.GET_RUN, (run_id,))
        return run_from_row(row) if row else None

    async def get_run_by_idempotency_key(self, key: str) -> Run | None:
        async with self._tx() as c:
            row = await self._one(c, q.GET_RUN_BY_KEY, (key,))
        return run_from_row(row) if row else None

    async def list_runs(self, flt: RunFilter) -> Page:
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("job", flt.job), ("batch_id", flt.batch_id)):
            if value is not None:
                where.append(f"{column} = %s")
                args.append(value)
        if flt.state is not None:
            where.append("state = %s")
            args.append(flt.state.value)
        for key, value in flt.labels:
            where.append("labels ->> %s = %s")
            args.extend([key, value])
        if flt.cursor is not None:
            where.append("id < %s")
            args.append(flt.cursor)
        sql = q.LIST_RUNS + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC LIMIT %s"
        args.append(flt.limit + 1)
        async with self._tx() as c:
            runs = [run_from_row(r) for r in await (await c.execute(sql, args)).fetchall()]
        more = len(runs) > flt.limit
        runs = runs[: flt.limit]
        return Page(runs=runs, next_cursor=runs[-1].id if more else None)

    async def count_runs(self, state: RunState, job: str | None = None) -> int:
        async with self._tx() as c:
            if job is None:
                row = await self._one(c, q.COUNT_RUNS, (state.value,))
            else:
                row = await self._one(c, q.COUNT_RUNS_OF_JOB, (state.value, job))
        return int(row[0]) if row else 0

    async def counts_by_job(self, state: RunState) -> dict[str, int]:
        async with self._tx() as c:
            rows = await (await c.execute(q.COUNT_BY_JOB, (state.value,))).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    async def count_active_by_job(self, host: str | None = None) -> dict[str, int]:
        async with self._tx() as c:
            if host is not None:
                cur = await c.execute(q.COUNT_ACTIVE_ON_HOST, (host,))
            else:
                cur = await c.execute(q.COUNT_BY_JOB, (RunState.RUNNING.value,))
            rows = await cur.fetchall()
        return {r[0]: int(r[1]) for r in rows}

    # -- dispatch ---------------------------------------------------------------------------

    async def claim(
        self, limit: int, job_slots: Mapping[str, int], now: float, host: str,
        token: str | None = None,
    ) -> list[Claim]:  # fmt: skip
        if limit <= 0:
            return []
        slots = dict(job_slots)
        full = {job for job, n in slots.items() if n <= 0}
        claims: list[Claim] = []
        async with self._tx("store_commit") as c:
            while len(claims) < limit:
                rows = await (
                    await c.execute(q.CLAIM_CANDIDATES, (now, sorted(full), limit - len(claims)))
                ).fetchall()
                if not rows:
                    break
                for run_id, job in rows:
                    if job in full:
                        break
                    if job in slots:
                        slots[job] -= 1
                        if slots[job] <= 0:
                            full.add(job)
                    claims.append(await self._claim_one(c, run_id, now, host, token))
        return claims

    async def _claim_one(
        self, c: Conn, run_id: str, now: float, host: str, token: str | None
    ) -> Claim:
        row = await self._one(c, q.CLAIM_RUN, (now, run_id))
        assert row is not None  # noqa: S101  the row is locked by this transaction
        attempt = Attempt(
            run_id=run_id, number=row[0], state=AttemptState.STARTING, created_at=now, host=host,
            lease_token=token,
        )  # fmt: skip
        await c.execute(q.INSERT_ATTEMPT, attempt_to_row(attempt))
        run = await self._run(c, run_id)
        await self._event(c, run_id, now, "state", state_event(run, RunState.QUEUED))
        return Claim(run=run, attempt=attempt)

    async def next_due(self) -> float | None:
        async with self._tx() as c:
            row = await self._one(c, q.NEXT_DUE, ())
        return row[0] if row else None

    async def attempts_started(
        self, started: list[tuple[str, int, int, int, float, float]]
    ) -> None:
        rows = [(pid, pgid, st, at, run_id, n) for run_id, n, pid, pgid, st, at in started]
        async with self._tx("store_commit") as c, c.cursor() as cur:
            await cur.executemany(q.ATTEMPT_STARTED, rows)

    async def end_attempt(
        self, run_id: str, number: int, end: AttemptEnd, token: str | None = None
    ) -> Run | None:
        async with self._tx("store_commit") as c:
            locked = await self._one(c, q.LOCK_RUN, (run_id,))
            cur = await c.execute(
                q.END_ATTEMPT,
                (end.attempt_state.value, end.ended_at, end.exit_code, end.signal, end.outcome,
                 end.peak_rss_kb, end.pid, end.started_at, run_id, number, token, token),
            )  # fmt: skip
            ended = await cur.fetchone()
            if ended is None or locked is None:
                return None
            check_transition(run_id, RunState(locked[0]), end.run_state)
            finished = None if end.run_state is RunState.QUEUED else end.ended_at
            await c.execute(
                q.END_RUN,
                (end.run_state.value, end.exit_code, end.reason, finished, end.not_before,
                 run_id, RunState.RUNNING.value),
            )  # fmt: skip
            run = await self._run(c, run_id)
            event = state_event(run, RunState.RUNNING) | {"attempt": number}
            await self._event(c, run_id, end.ended_at, "state", event)
            await c.execute(q.NOTIFY, (q.RUN_CHANNEL, f"{run_id} {run.state.value} {ended[0]}"))
            if run.state is RunState.QUEUED:  # a retry: any server may take it
                await c.execute(q.NOTIFY, (q.QUEUE_CHANNEL, ""))
        return run

    async def cancel_queued(self, run_id: str, at: float, reason: str) -> Run | None:
        async with self._tx("store_commit") as c:
            row = await self._one(c, q.LOCK_RUN, (run_id,))
            if row is None or row[0] != RunState.QUEUED.value:
                return None
            check_transition(run_id, RunState.QUEUED, RunState.CANCELLED)
            await c.execute(
                q.END_RUN, (RunState.CANCELLED.value, None, reason, at, None, run_id, "queued")
            )
            run = await self._run(c, run_id)
            await self._event(c, run_id, at, "state", state_event(run, RunState.QUEUED))
            await c.execute(q.NOTIFY, (q.RUN_CHANNEL, f"{run_id} {run.state.value} -"))
        return run

    async def request_cancel(self, run_id: str) -> Run | None:
        async with self._tx("store_commit") as c:
            if (await c.execute(q.SET_CANCEL_REQUESTED, (run_id,))).rowcount == 0:
                return None
            return await self._run(c, run_id)

    async def delete_run(self, run_id: str) -> bool:
        async with self._tx("store_commit") as c:
            return (await c.execute(q.DELETE_RUN, (run_id,))).rowcount > 0

    async def get_attempts(self, run_id: str) -> list[Attempt]:
        async with self._tx() as c:
            rows = await (await c.execute(q.GET_ATTEMPTS, (run_id,))).fetchall()
        return [attempt_from_row(r) for r in rows]

    async def active_attempts(self, host: str | None = None) -> list[Attempt]:
        async with self._tx() as c:
            rows = await (await c.execute(q.ACTIVE_ATTEMPTS, (host, host))).fetchall()
        return [attempt_from_row(r) for r in rows]

    # -- membership -------------------------------------------------------------------------

    async def register_server(
        self, server_id: str, url: str, capacity: int, now: float, lease_s: float
    ) -> str:
        async with self._tx("store_commit") as c:
            # one registration of an id at a time (two processes claiming one identity)
            await c.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                            (q.MEMBERSHIP_LOCK, server_id))  # fmt: skip
            row = await self._one(c, q.GET_SERVER, (server_id,))
            token, expires = new_token(row, now), now + lease_s
            values = (url, token, capacity, now, now, expires, server_id)
            if row is None:
                await c.execute(q.INSERT_SERVER, (server_id, *values[:-1]))
                return token
            await c.execute(q.UPDATE_SERVER, values)
            if token != row[2]:
                await c.execute(q.RETOKEN_ATTEMPTS, (token, server_id, row[2]))
            return token

    async def renew_server(self, server_id: str, token: str, now: float, lease_s: float) -> bool:
        async with self._tx("store_commit") as c:
            cur = await c.execute(q.RENEW_SERVER, (now, now + lease_s, server_id, token, now))
            return cur.rowcount > 0

    async def live_servers(self, now: float) -> list[ServerInfo]:
        async with self._tx() as c:
            rows = await (await c.execute(q.LIVE_SERVERS, (now,))).fetchall()
        return [ServerInfo(*r) for r in rows]

    async def orphaned_attempts(self, now: float) -> list[Attempt]:
        async with self._tx() as c:
            rows = await (await c.execute(q.ORPHANED_ATTEMPTS, (now,))).fetchall()
        return [attempt_from_row(r) for r in rows]

    # -- progress and events ----------------------------------------------------------------

    async def set_progress(self, run_id: str, progress: dict[str, Any]) -> None:
        async with self._tx("progress") as c:
            await c.execute(q.SET_PROGRESS, (dumps(progress), run_id))

    async def add_progress(
        self,
        run_id: str,
        attempt: int,
        events: list[tuple[float, dict[str, Any]]],
        *,
        offset: int,
        skipped: int,
    ) -> None:
        async with self._tx("progress") as c:
            await c.execute(q.LOCK_RUN, (run_id,))
            for at, data in events:
                await self._event(c, run_id, at, "progress", data | {"attempt": attempt})
            latest = dumps(events[-1][1]) if events else None
            await c.execute(q.SAVE_PROGRESS, (latest, skipped, run_id))
            await c.execute(q.SET_PROGRESS_OFFSET, (offset, run_id, attempt))

    async def progress_offset(self, run_id: str, attempt: int) -> int:
        async with self._tx() as c:
            row = await self._one(c, q.GET_PROGRESS_OFFSET, (run_id, attempt))
        return int(row[0]) if row else 0

    async def list_events(self, run_id: str, after: int, limit: int = 1000) -> list[RunEvent]:
        async with self._tx() as c:
            rows = await (await c.execute(q.LIST_EVENTS, (run_id, after, limit))).fetchall()
        return [RunEvent(r[0], r[1], r[2], r[3], loads(r[4])) for r in rows]

    async def last_event_seq(self, run_id: str) -> int:
        async with self._tx() as c:
            row = await self._one(c, q.LAST_EVENT_SEQ, (run_id,))
        return int(row[0]) if row else 0

    # -- batches, schedules, retention ------------------------------------------------------

    async def insert_batch(self, batch: Batch, runs: list[Run]) -> None:
        async with self._tx("store_commit") as c:
            await c.execute(
                q.INSERT_BATCH,
                (batch.id, batch.job, batch.size, batch.created_at, json.dumps(batch.request)),
            )
            for run in runs:
                await c.execute(q.INSERT_RUN, run_to_row(run))
                await self._event(c, run.id, run.created_at, "state", state_event(run, None))
            await c.execute(q.NOTIFY, (q.QUEUE_CHANNEL, ""))

    async def get_batch(self, batch_id: str) -> Batch | None:
        async with self._tx() as c:
            row = await self._one(c, q.GET_BATCH, (batch_id,))
        return Batch(row[0], row[1], row[2], row[3], loads(row[4])) if row else None

    async def list_batches(self, before: str | None, limit: int) -> list[Batch]:
        async with self._tx() as c:
            rows = await (
                await c.execute(q.LIST_BATCHES, {"before": before, "limit": limit})
            ).fetchall()
        return [Batch(r[0], r[1], r[2], r[3], loads(r[4])) for r in rows]

    async def batch_counts(self, batch_id: str) -> dict[str, int]:
        async with self._tx() as c:
            rows = await (await c.execute(q.BATCH_COUNTS, (batch_id,))).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    async def batch_run_ids(self, batch_id: str, state: RunState) -> list[str]:
        async with self._tx() as c:
            rows = await (await c.execute(q.BATCH_RUNS_IN, (batch_id, state.value))).fetchall()
        return [r[0] for r in rows]

    async def save_schedule(self, schedule: Schedule, run: Run | None = None) -> None:
        async with self._tx("store_commit") as c:
            if run is not None:
                await c.execute(q.INSERT_RUN, run_to_row(run))
                await self._event(c, run.id, run.created_at, "state", state_event(run, None))
                await c.execute(q.NOTIFY, (q.QUEUE_CHANNEL, ""))
            await c.execute(q.UPSERT_SCHEDULE, schedule_to_row(schedule))
            await c.execute(q.NOTIFY, (q.SCHEDULES_CHANNEL, schedule.id))

    async def list_schedules(self) -> list[Schedule]:
        async with self._tx() as c:
            rows = await (await c.execute(q.LIST_SCHEDULES)).fetchall()
        return [schedule_from_row(r) for r in rows]

    async def delete_schedule(self, schedule_id: str) -> bool:
        async with self._tx("store_commit") as c:
            await c.execute(q.NOTIFY, (q.SCHEDULES_CHANNEL, schedule_id))
            return (await c.execute(q.DELETE_SCHEDULE, (schedule_id,))).rowcount > 0

    async def finished_before(
        self, before: float, limit: int, offset: int = 0
    ) -> list[tuple[str, dict[str, Any], float]]:
        async with self._tx() as c:
            rows = await (await c.execute(q.FINISHED_BEFORE, (before, limit, offset))).fetchall()
        return [(r[0], loads(r[1]), r[2]) for r in rows]
