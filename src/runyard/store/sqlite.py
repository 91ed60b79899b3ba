"""The SQLite store: WAL, busy_timeout, short BEGIN IMMEDIATE transactions on one DB thread.

Plain DB-API rather than an ORM: the statements are few and hot (a submit, a claim, an end
per run), and every call runs as one unit on a dedicated thread, which both keeps SQLite off
the event loop and makes each method's transaction atomic without interleaving. One class
implements the whole Store contract for one backend (as postgres.py does), hence its length.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

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
from runyard.store import sqlite_sql as q
from runyard.store.base import AttemptEnd, Page, Store, new_token
from runyard.store.migrations import migration_files
from runyard.store.rows import (
    attempt_from_row,
    attempt_to_row,
    dumps,
    run_from_row,
    run_to_row,
    schedule_from_row,
    schedule_to_row,
)

T = TypeVar("T")


class SQLiteStore(Store):
    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 5000,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self.path = path
        self._observe = observe
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened
        # Why the last write failed on storage (full, I/O, file gone), until a write succeeds:
        # readiness reports it and probes (probe_write) whether it has cleared.
        self.write_errors: dict[str, str] = {}  # failpoint of the write -> why it failed
        self._write_point = "store_commit"  # the failpoint of the write in progress
        # One thread owns the connection: calls queue up instead of contending for the lock.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runyard-sqlite")

    # -- plumbing ---------------------------------------------------------------------------

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        if self._observe is None:
            return await loop.run_in_executor(self._executor, self._guarded, fn)
        operation = sys._getframe(1).f_code.co_name  # the Store method that called
        started = time.perf_counter()
        try:
            return await loop.run_in_executor(self._executor, self._guarded, fn)
        finally:
            self._observe(operation, time.perf_counter() - started)

    def _guarded(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise StoreBusyError("the store is not open")
        try:
            return fn(self._conn)
        except OSError as exc:  # a failpoint, or the file check in _tx
            raise self._failed(storage_error(exc, "the database")) from exc
        except sqlite3.OperationalError as exc:
            # extended result codes (SQLITE_IOERR_WRITE...) keep the primary code in the low byte
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code == sqlite3.SQLITE_FULL:
                raise self._failed(StorageFullError("the database's disk is full")) from exc
            if code in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CORRUPT):
                raise self._failed(
                    StorageIOError(f"the database cannot be written: {exc}")
                ) from exc
            if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise StoreBusyError("the database is busy; try again") from exc
            raise

    def _failed(self, error: RunyardError) -> RunyardError:
        self.write_errors[self._write_point] = error.detail
        return error

    def _check_file(self) -> None:
        """Raise OSError(EIO) if the database file was deleted or replaced since it was opened:
        SQLite would go on writing to the unlinked file, and every write would be lost at the
        next start. One stat per write transaction."""
        try:
            st = os.stat(self.path)  # noqa: PTH116  cheap, on the store thread
            same = (st.st_dev, st.st_ino) == self._identity
        except FileNotFoundError:
            same = False
        if not same and self._identity is not None:
            raise OSError(5, f"the database file {self.path} was deleted or replaced since it "
                          "was opened; restart the server")  # fmt: skip

    @contextmanager
    def _tx(self, conn: sqlite3.Connection, point: str = "store_commit") -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so a transaction never fails half way
        # through on a lock upgrade.
        self._write_point = point
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._check_file()
            failpoints.check(point)
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        if self.write_errors:
            self.write_errors.pop(point, None)

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        st = os.stat(self.path)  # noqa: PTH116  the file the connection has just opened
        self._identity = (st.st_dev, st.st_ino)
        self._conn = conn
        self._migrate(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with self._tx(conn):
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, sql in migration_files("sqlite"):
                if version in done:
                    continue
                for statement in _statements(sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, time.time())
                )

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._connect)

    async def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, _close)
        self._executor.shutdown(wait=True)

    async def ping(self) -> None:
        await self._call(lambda c: c.execute("SELECT 1").fetchone())

    async def health_problems(self) -> dict[str, str]:
        """Readiness: the file is the one opened; writes work again after one failed."""

        def op(c: sqlite3.Connection) -> dict[str, str]:
            try:
                self._check_file()
            except OSError as exc:
                return {"database": str(exc.strerror)}
            failing = []
            for point, why in list(self.write_errors.items()):
                try:  # it failed last time: does one go through now? (a header-only write)
                    with self._tx(c, point):
                        version = c.execute("PRAGMA user_version").fetchone()[0]
                        c.execute(f"PRAGMA user_version = {int(version)}")
                except (OSError, sqlite3.Error):
                    failing.append(why)
            return {"store": "; ".join(failing)} if failing else {}

        return await self._call(op)

    # -- runs -------------------------------------------------------------------------------

    async def insert_run(self, run: Run) -> tuple[Run, bool]:
        def op(c: sqlite3.Connection) -> tuple[Run, bool]:
            with self._tx(c):
                if run.idempotency_key is not None:
                    row = c.execute(q.GET_RUN_BY_KEY, (run.idempotency_key,)).fetchone()
                    if row is not None:
                        return run_from_row(row), False
                c.execute(q.INSERT_RUN, run_to_row(run))
                _add_event(c, run.id, run.created_at, "state", state_event(run, None))
            return run, True

        return await self._call(op)

    async def insert_batch(self, batch: Batch, runs: list[Run]) -> None:
        def op(c: sqlite3.Connection) -> None:
            with self._tx(c):
                c.execute(
                    q.INSERT_BATCH,
                    (batch.id, batch.job, batch.size, batch.created_at, dumps(batch.request)),
                )
                for run in runs:
                    c.execute(q.INSERT_RUN, run_to_row(run))
                    _add_event(c, run.id, run.created_at, "state", state_event(run, None))

        await self._call(op)

    async def get_batch(self, batch_id: str) -> Batch | None:
        def op(c: sqlite3.Connection) -> Batch | None:
            row = c.execute(q.GET_BATCH, (batch_id,)).fetchone()
            return Batch(row[0], row[1], row[2], row[3], json.loads(row[4])) if row else None

        return await self._call(op)

    async def list_batches(self, before: str | None, limit: int) -> list[Batch]:
        def op(c: sqlite3.Connection) -> list[Batch]:
            rows = c.execute(q.LIST_BATCHES, {"before": before, "limit": limit}).fetchall()
            return [Batch(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

        return await self._call(op)

    async def batch_counts(self, batch_id: str) -> dict[str, int]:
        return await self._call(lambda c: dict(c.execute(q.BATCH_COUNTS, (batch_id,)).fetchall()))

    async def batch_run_ids(self, batch_id: str, state: RunState) -> list[str]:
        return await self._call(
            lambda c: [r[0] for r in c.execute(q.BATCH_RUNS_IN, (batch_id, state.value))]
        )

    async def save_schedule(self, schedule: Schedule, run: Run | None = None) -> None:
        row = schedule_to_row(schedule)

        def op(c: sqlite3.Connection) -> None:
            with self._tx(c):
                if run is not None:
                    c.execute(q.INSERT_RUN, run_to_row(run))
                    _add_event(c, run.id, run.created_at, "state", state_event(run, None))
                c.execute(q.UPSERT_SCHEDULE, row)

        await self._call(op)

    async def list_schedules(self) -> list[Schedule]:
        return await self._call(
            lambda c: [schedule_from_row(r) for r in c.execute(q.LIST_SCHEDULES)]
        )

    async def delete_schedule(self, schedule_id: str) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            with self._tx(c):
                return c.execute(q.DELETE_SCHEDULE, (schedule_id,)).rowcount > 0

        return await self._call(op)

    async def get_run(self, run_id: str) -> Run | None:
        def op(c: sqlite3.Connection) -> Run | None:
            row = c.execute(q.GET_RUN, (run_id,)).fetchone()
            return run_from_row(row) if row else None

        return await self._call(op)

    async def get_run_by_idempotency_key(self, key: str) -> Run | None:
        def op(c: sqlite3.Connection) -> Run | None:
            row = c.execute(q.GET_RUN_BY_KEY, (key,)).fetchone()
            return run_from_row(row) if row else None

        return await self._call(op)

    async def list_runs(self, flt: RunFilter) -> Page:
        where: list[str] = []
        args: list[str | int] = []
        if flt.job is not None:
            where.append("job = ?")
            args.append(flt.job)
        if flt.state is not None:
            where.append("state = ?")
            args.append(flt.state.value)
        if flt.batch_id is not None:
            where.append("batch_id = ?")
            args.append(flt.batch_id)
        for key, value in flt.labels:
            where.append("json_extract(labels, ?) = ?")
            args.extend([f'$."{key}"', value])
        if flt.cursor is not None:
            where.append("id < ?")
            args.append(flt.cursor)
        sql = q.LIST_RUNS + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(flt.limit + 1)

        def op(c: sqlite3.Connection) -> Page:
            runs = [run_from_row(r) for r in c.execute(sql, args).fetchall()]
            more = len(runs) > flt.limit
            runs = runs[: flt.limit]
            return Page(runs=runs, next_cursor=runs[-1].id if more else None)

        return await self._call(op)

    async def count_runs(self, state: RunState, job: str | None = None) -> int:
        def op(c: sqlite3.Connection) -> int:
            if job is None:
                return int(c.execute(q.COUNT_RUNS, (state.value,)).fetchone()[0])
            return int(c.execute(q.COUNT_RUNS_OF_JOB, (state.value, job)).fetchone()[0])

        return await self._call(op)

    async def counts_by_job(self, state: RunState) -> dict[str, int]:
        return await self._call(
            lambda c: dict(c.execute(q.COUNT_BY_JOB, (state.value,)).fetchall())
        )

    async def count_active_by_job(self, host: str | None = None) -> dict[str, int]:
        if host is not None:
            return await self._call(
                lambda c: dict(c.execute(q.COUNT_ACTIVE_ON_HOST, (host,)).fetchall())
            )
        return await self._call(lambda c: dict(c.execute(q.COUNT_ACTIVE_BY_JOB).fetchall()))

    # -- dispatch ---------------------------------------------------------------------------

    async def claim(
        self, limit: int, job_slots: Mapping[str, int], now: float, host: str,
        token: str | None = None,
    ) -> list[Claim]:  # fmt: skip
        if limit <= 0:
            return []

        def op(c: sqlite3.Connection) -> list[Claim]:
            slots = dict(job_slots)
            full = {job for job, n in slots.items() if n <= 0}
            claims: list[Claim] = []
            with self._tx(c):
                # Each query skips jobs with no free slot; a job that fills up during the claim
                # ends the page, so the queue is never scanned past what can be taken.
                while len(claims) < limit:
                    rows = c.execute(
                        q.CLAIM_CANDIDATES, (now, json.dumps(sorted(full)), limit - len(claims))
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
                        claims.append(self._claim_one(c, run_id, now, host, token))
            return claims

        return await self._call(op)

    @staticmethod
    def _claim_one(
        c: sqlite3.Connection, run_id: str, now: float, host: str, token: str | None
    ) -> Claim:
        (number,) = c.execute(q.CLAIM_RUN, (now, run_id)).fetchone()
        attempt = Attempt(
            run_id=run_id, number=number, state=AttemptState.STARTING, created_at=now, host=host,
            lease_token=token,
        )  # fmt: skip
        c.execute(q.INSERT_ATTEMPT, attempt_to_row(attempt))
        run = run_from_row(c.execute(q.GET_RUN, (run_id,)).fetchone())
        _add_event(c, run_id, now, "state", state_event(run, RunState.QUEUED))
        return Claim(run=run, attempt=attempt)

    async def next_due(self) -> float | None:
        return await self._call(lambda c: c.execute(q.NEXT_DUE).fetchone()[0])

    async def attempts_started(
        self, started: list[tuple[str, int, int, int, float, float]]
    ) -> None:
        rows = [(pid, pgid, st, at, run_id, n) for run_id, n, pid, pgid, st, at in started]

        def op(c: sqlite3.Connection) -> None:
            with self._tx(c):
                c.executemany(q.ATTEMPT_STARTED, rows)

        await self._call(op)

    async def end_attempt(
        self, run_id: str, number: int, end: AttemptEnd, token: str | None = None
    ) -> Run | None:
        def op(c: sqlite3.Connection) -> Run | None:
            with self._tx(c):
                cur = c.execute(
                    q.END_ATTEMPT,
                    (end.attempt_state.value, end.ended_at, end.exit_code, end.signal,
                     end.outcome, end.peak_rss_kb, end.pid, end.started_at, run_id, number,
                     token, token),
                )  # fmt: skip
                if cur.rowcount == 0:
                    return None
                self._move(c, run_id, RunState.RUNNING, end.run_state, end)
                run = run_from_row(c.execute(q.GET_RUN, (run_id,)).fetchone())
                event = state_event(run, RunState.RUNNING) | {"attempt": number}
                _add_event(c, run_id, end.ended_at, "state", event)
                return run

        return await self._call(op)

    @staticmethod
    def _move(
        c: sqlite3.Connection, run_id: str, expected: RunState, target: RunState, end: AttemptEnd
    ) -> None:
        row = c.execute(q.RUN_STATE, (run_id,)).fetchone()
        check_transition(run_id, RunState(row[0]), target)
        finished = None if target is RunState.QUEUED else end.ended_at
        c.execute(
            q.END_RUN,
            (target.value, end.exit_code, end.reason, finished, end.not_before, run_id,
             expected.value),
        )  # fmt: skip

    async def cancel_queued(self, run_id: str, at: float, reason: str) -> Run | None:
        def op(c: sqlite3.Connection) -> Run | None:
            with self._tx(c):
                row = c.execute(q.RUN_STATE, (run_id,)).fetchone()
                if row is None or row[0] != RunState.QUEUED.value:
                    return None
                check_transition(run_id, RunState.QUEUED, RunState.CANCELLED)
                c.execute(
                    q.END_RUN,
                    (RunState.CANCELLED.value, None, reason, at, None, run_id, "queued"),
                )
                run = run_from_row(c.execute(q.GET_RUN, (run_id,)).fetchone())
                _add_event(c, run_id, at, "state", state_event(run, RunState.QUEUED))
                return run

        return await self._call(op)

    async def request_cancel(self, run_id: str) -> Run | None:
        def op(c: sqlite3.Connection) -> Run | None:
            with self._tx(c):
                if c.execute(q.SET_CANCEL_REQUESTED, (run_id,)).rowcount == 0:
                    return None
                return run_from_row(c.execute(q.GET_RUN, (run_id,)).fetchone())

        return await self._call(op)

    async def finished_before(
        self, before: float, limit: int, offset: int = 0
    ) -> list[tuple[str, dict[str, Any], float]]:
        def op(c: sqlite3.Connection) -> list[tuple[str, dict[str, Any], float]]:
            rows = c.execute(q.FINISHED_BEFORE, (before, limit, offset)).fetchall()
            return [(r[0], json.loads(r[1]), r[2]) for r in rows]

        return await self._call(op)

    async def delete_run(self, run_id: str) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            with self._tx(c):
                return c.execute(q.DELETE_RUN, (run_id,)).rowcount > 0

        return await self._call(op)

    async def get_attempts(self, run_id: str) -> list[Attempt]:
        return await self._call(
            lambda c: [attempt_from_row(r) for r in c.execute(q.GET_ATTEMPTS, (run_id,))]
        )

    async def active_attempts(self, host: str | None = None) -> list[Attempt]:
        return await self._call(
            lambda c: [attempt_from_row(r) for r in c.execute(q.ACTIVE_ATTEMPTS, (host, host))]
        )

    # -- membership -------------------------------------------------------------------------

    async def register_server(
        self, server_id: str, url: str, capacity: int, now: float, lease_s: float
    ) -> str:
        def op(c: sqlite3.Connection) -> str:
            with self._tx(c):
                row = c.execute(q.GET_SERVER, (server_id,)).fetchone()
                token, expires = new_token(row, now), now + lease_s
                values = (url, token, capacity, now, now, expires, server_id)
                if row is None:
                    c.execute(q.INSERT_SERVER, (server_id, *values[:-1]))
                    return token
                c.execute(q.UPDATE_SERVER, values)
                if token != row[2]:
                    c.execute(q.RETOKEN_ATTEMPTS, (token, server_id, row[2]))
                return token

        return await self._call(op)

    async def renew_server(self, server_id: str, token: str, now: float, lease_s: float) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            with self._tx(c):
                args = (now, now + lease_s, server_id, token, now)
                return c.execute(q.RENEW_SERVER, args).rowcount > 0

        return await self._call(op)

    async def live_servers(self, now: float) -> list[ServerInfo]:
        return await self._call(
            lambda c: [ServerInfo(*r) for r in c.execute(q.LIVE_SERVERS, (now,))]
        )

    async def orphaned_attempts(self, now: float) -> list[Attempt]:
        return await self._call(
            lambda c: [attempt_from_row(r) for r in c.execute(q.ORPHANED_ATTEMPTS, (now,))]
        )

    async def set_progress(self, run_id: str, progress: dict[str, Any]) -> None:
        def op(c: sqlite3.Connection) -> None:
            with self._tx(c, "progress"):
                c.execute(q.SET_PROGRESS, (dumps(progress), run_id))

        await self._call(op)

    async def add_progress(
        self,
        run_id: str,
        attempt: int,
        events: list[tuple[float, dict[str, Any]]],
        *,
        offset: int,
        skipped: int,
    ) -> None:
        def op(c: sqlite3.Connection) -> None:
            with self._tx(c, "progress"):
                for at, data in events:
                    _add_event(c, run_id, at, "progress", data | {"attempt": attempt})
                latest = dumps(events[-1][1]) if events else None
                c.execute(q.SAVE_PROGRESS, (latest, skipped, run_id))
                c.execute(q.SET_PROGRESS_OFFSET, (offset, run_id, attempt))

        await self._call(op)

    async def progress_offset(self, run_id: str, attempt: int) -> int:
        def op(c: sqlite3.Connection) -> int:
            row = c.execute(q.GET_PROGRESS_OFFSET, (run_id, attempt)).fetchone()
            return int(row[0]) if row else 0

        return await self._call(op)

    async def list_events(self, run_id: str, after: int, limit: int = 1000) -> list[RunEvent]:
        def op(c: sqlite3.Connection) -> list[RunEvent]:
            rows = c.execute(q.LIST_EVENTS, (run_id, after, limit)).fetchall()
            return [RunEvent(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

        return await self._call(op)

    async def last_event_seq(self, run_id: str) -> int:
        return await self._call(lambda c: int(c.execute(q.LAST_EVENT_SEQ, (run_id,)).fetchone()[0]))


def _add_event(
    c: sqlite3.Connection, run_id: str, at: float, kind: str, data: dict[str, Any]
) -> None:
    (seq,) = c.execute(q.NEXT_EVENT_SEQ, (run_id,)).fetchone()
    c.execute(q.INSERT_EVENT, (run_id, seq, at, kind, dumps(data)))


def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements (executescript would commit on its own)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        if not buf and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf
            buf = ""
    if buf.strip():
        yield buf
