"""The PostgreSQL store: psycopg 3, an async connection pool, one transaction per method.

For several servers over one database: claims take rows with FOR UPDATE SKIP LOCKED, a run's
events are numbered under its row lock, migrations run once under an advisory lock when
servers start together, and commits NOTIFY the other servers. The algorithms are logic.py's;
this module holds the pool, its errors, notifications and the sessions of postgres_session.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from runyard import failpoints
from runyard.errors import (
    RunyardError,
    StorageFullError,
    StorageIOError,
    StoreBusyError,
    StoreUnreachableError,
    storage_error,
)
from runyard.store import postgres_sql as q
from runyard.store.migrations import migration_files
from runyard.store.postgres_session import Handlers, Leadership, Listener
from runyard.store.sqlstore import COMMIT, SQLStore
from runyard.store.units import Make, Notify, Step, bind, drive_async

Conn = AsyncConnection[Any]
T = TypeVar("T")


# How long a transaction waits for a connection before it is `store-unreachable` (a 503 with
# Retry-After): the pool's own 30 s outlasted a lease (15 s), and clients' timeouts
POOL_WAIT_S = 5.0
# How long the pool tries to replace a connection, with its backoff doubling from 1 s, before
# it gives up and the next request starts afresh: its own 300 s let the backoff grow to the
# length of an outage, which then went on as long again after the database was back.
RECONNECT_S = 2 * POOL_WAIT_S


class PostgresStore(SQLStore):
    def __init__(self, dsn: str, *, schema: str | None = None, max_size: int = 10) -> None:
        super().__init__()
        self.dsn = dsn
        self.schema = schema
        kwargs: dict[str, Any] = {"autocommit": True}
        if schema is not None:
            kwargs["options"] = f"-c search_path={schema}"
        self.pool = AsyncConnectionPool(
            dsn, min_size=1, max_size=max_size, kwargs=kwargs, open=False, timeout=POOL_WAIT_S,
            reconnect_timeout=RECONNECT_S,
        )  # fmt: skip
        self._kwargs = kwargs
        self._listener: Listener | None = None
        self._leadership = Leadership(dsn, kwargs, q.SCHEDULER_LOCK)
        self._scope: Callable[[str], str] = str  # set by open(), once the schema is known

    # -- transactions -----------------------------------------------------------------------

    async def _read(self, make: Make[T]) -> T:
        return await self._again_if_dropped(make, None)

    async def _write(self, make: Make[T], point: str = COMMIT) -> T:
        return await self._again_if_dropped(make, point)

    async def _again_if_dropped(self, make: Make[T], write: str | None) -> T:
        """The transaction, run once more on another connection if the database dropped the
        first before its commit: a restart, a failover or a terminated backend drops every
        idle connection of the pool at once, and each was found broken only by the next
        request to use it (a 500). Nothing of a transaction dropped before its commit was
        written; a write dropped during its commit is not run again (it may be written), and
        neither is the second: 503 `store-unreachable`. The pool's idle connections are
        checked first, and the broken ones replaced."""
        try:
            async with self._tx(write) as c:
                return await drive_async(make(), partial(_execute, c, self._scope))
        except _DroppedError as exc:
            if exc.committing and write is not None:
                raise
        # what dropped one connection (a restart) dropped the pool's idle others with it
        await self.pool.check()
        async with self._tx(write) as c:
            return await drive_async(make(), partial(_execute, c, self._scope))

    @asynccontextmanager
    async def _tx(self, write: str | None = None) -> AsyncIterator[Conn]:
        """One transaction; `write` names the failpoint of a transaction that writes."""
        conn: Conn | None = None
        committing = False
        try:
            async with self.pool.connection() as conn, conn.transaction():
                yield conn
                if write is not None:
                    failpoints.check(write)  # raising here rolls the transaction back
                committing = True
        except PoolTimeout as exc:
            raise StoreUnreachableError(f"no connection to the database: {exc}") from exc
        except errors.OperationalError as exc:
            if conn is not None and conn.broken:
                raise _DroppedError(str(exc).strip(), committing) from exc
            mapped = _mapped(exc, write, self._failed)
            if mapped is exc:
                raise
            raise mapped from exc
        except OSError as exc:
            raise self._failed(storage_error(exc, "the database"), write or COMMIT) from exc
        except errors.DeadlockDetected as exc:
            raise StoreBusyError("the database is busy; try again") from exc
        if write is not None:
            self._written(write)

    # -- the Store contract: what the shared logic leaves to a backend ----------------------

    async def open(self) -> None:
        await self.pool.open(wait=True)
        async with self._tx() as c:
            # the schema in use — given here, or by search_path in the URL: channels and
            # advisory locks are the database's, so they are scoped to it
            (current,) = await (await c.execute(q.CURRENT_SCHEMA)).fetchone() or ("public",)
            schema = self.schema or current
            scoped = None if schema in (None, "public") else schema
            self._scope = partial(q.scoped_channel, schema=scoped)
            self._leadership.key = q.scoped_lock(q.SCHEDULER_LOCK, scoped)
            await c.execute(q.LOCK_MIGRATIONS, (q.scoped_lock(q.MIGRATION_LOCK, scoped),))
            await c.execute(q.CREATE_MIGRATIONS)
            done = {r[0] for r in await (await c.execute(q.APPLIED_MIGRATIONS)).fetchall()}
            for version, name, sql in migration_files("postgres"):
                if version not in done:
                    await c.execute(sql.encode())
                    await c.execute(q.RECORD_MIGRATION, (version, name, time.time()))

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
        await self._leadership.release()
        await self.pool.close()

    async def ping(self) -> None:
        async with self._tx() as c:
            await c.execute(q.PING)

    async def health_problems(self) -> dict[str, str]:
        """Readiness: after a write failed, does one go through now? (a transaction that
        takes a transaction id, so its commit is written to the WAL)."""
        failing = []
        for point in list(self.write_errors):
            try:
                async with self._tx(point) as c:
                    await c.execute(q.PROBE_WRITE)
            except RunyardError as exc:
                failing.append(exc.detail)
        return {"store": "; ".join(failing)} if failing else {}

    async def listen(self, handlers: Handlers) -> None:
        scoped = {self._scope(channel): handler for channel, handler in handlers.items()}
        self._listener = Listener(self.dsn, self._kwargs, scoped)
        self._listener.start()
        await self._listener.connected.wait()

    async def try_lead(self, server_id: str | None = None, life: str | None = None) -> bool:
        return await self._leadership.try_lead(server_id, life)

    async def stand_down(self) -> None:
        await self._leadership.release()


class _DroppedError(StoreUnreachableError):
    """The connection broke under a transaction; `committing`: during its commit."""

    def __init__(self, why: str, committing: bool) -> None:
        if committing:
            super().__init__(
                f"the database's connection was lost during a commit ({why}): what was asked "
                "may have been written; read it back, or repeat it with the same "
                "Idempotency-Key"
            )
        else:
            super().__init__(f"the database's connection was lost ({why})")
        self.committing = committing


def _mapped(
    exc: errors.OperationalError,
    write: str | None,
    failed: Callable[[RunyardError, str], RunyardError],
) -> Exception:
    """What a database error on a sound connection is: its disk full or failing (a write
    fault, as a full disk is for SQLite), or busy; anything else as it is."""
    if isinstance(exc, errors.DiskFull):
        return failed(StorageFullError("the database's disk is full"), write or COMMIT)
    if isinstance(exc, errors.IoError):
        error = StorageIOError(f"the database cannot be written: {exc}")
        return failed(error, write or COMMIT)
    if isinstance(exc, errors.LockNotAvailable | errors.QueryCanceled):
        return StoreBusyError("the database is busy; try again")
    return exc


async def _execute(c: Conn, scope: Callable[[str], str], step: Step) -> Any:
    if isinstance(step, Notify):  # sent at commit: never heard before it can be read
        await c.execute(q.NOTIFY, (scope(step.channel), step.payload))
        return None
    sql, args = bind(q, step)
    if sql is None:
        return None
    if step.result == "many":
        async with c.cursor() as cur:
            await cur.executemany(sql, args)
        return None
    cur = await c.execute(sql, args)
    if step.result == "one":
        return await cur.fetchone()
    if step.result == "all":
        return await cur.fetchall()
    return cur.rowcount if step.result == "count" else None
