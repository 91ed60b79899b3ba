"""The SQLite store's reads: a connection and a thread of their own.

WAL lets one connection read while another writes, and a read sees every commit made before it
began, so every write a caller has heard of. On the writer's thread a read that takes long —
the health snapshot's count of a million queued runs, a listing filtered on labels — held up
every submit, claim and end queued behind it (50 to 80 ms each time, once a second, at a million
queued runs); here it costs what it costs and holds up only other reads.
"""

from __future__ import annotations

import sqlite3
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

from runyard.errors import StorageIOError, StoreBusyError, store_damaged
from runyard.store import sqlite_sql as q
from runyard.store.group_commit import GroupCommit, Pending
from runyard.store.sqlite_steps import ReadBack, TakeNext, WriteAll
from runyard.store.units import Make, Notify, Step, bind, drive

T = TypeVar("T")


def _null(value: None) -> None:
    return value


# CPython's sqlite3 binds None and bool (any type but exactly int, float, str) only after
# looking for an adapter and a `__conform__` it never finds: AttributeErrors raised and
# cleared, about 0.4 µs per parameter, and a run binds some two dozen NULLs. Registered, the
# adapter is found at once. (The registry is the process's; each binds as it did without.)
sqlite3.register_adapter(type(None), _null)
sqlite3.register_adapter(bool, int)


class Reads:
    def __init__(self, path: Path, busy_timeout_ms: int) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._thread: GroupCommit | None = None

    async def open(self) -> None:
        """After the writer opened the file (and migrated it): nothing to create here."""
        if self._thread is None:
            self._thread = GroupCommit(self._run, "runyard-sqlite-reads")
        await self._thread.call(self._connect)

    async def close(self) -> None:
        if self._thread is None:
            return
        await self._thread.call(self._disconnect)
        await self._thread.stop()
        self._thread = None

    async def read(self, make: Make[T]) -> T:
        if self._thread is None:
            raise StoreBusyError("the store is not open")
        return cast(T, await self._thread.submit(make, None))

    def _connect(self) -> None:
        # mode=rw: a database gone from its path is an error here, not a new empty one
        uri = f"{self.path.resolve().as_uri()}?mode=rw"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute(q.busy_timeout(self._busy_timeout_ms))
        conn.execute("PRAGMA query_only = ON")  # a bug here must not write behind the writer
        self._conn = conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self, group: list[Pending]) -> None:
        """On the reads' thread: each read in a transaction of its own (autocommit)."""
        for p in group:
            if self._conn is None:
                p.fail(StoreBusyError("the store is not open"))
                continue
            try:
                p.succeed(drive(cast("Make[Any]", p.make)(), partial(execute, self._conn)))
            except Exception as exc:
                p.fail(_mapped(exc, self.path))


def _mapped(exc: Exception, path: object) -> Exception:
    """What a reader hears of a failed read: busy and I/O errors as the store's own, damaged
    pages as such (a read failing marks no write as failing: readiness is the writer's to
    say, and the store tells it of damage). By SQLite's code: Python raises a damaged page
    (SQLITE_CORRUPT) as a plain DatabaseError, not an OperationalError."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return exc
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreBusyError("the database is busy; try again")
    if code in DAMAGED:
        return store_damaged(path, exc)
    if code in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN):
        return StorageIOError(f"the database cannot be read: {exc}")
    return exc


DAMAGED = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def execute(c: sqlite3.Connection, step: Step) -> Any:
    """One step of a unit on connection `c`: its SQL run, its result as the unit asked."""
    if isinstance(step, Notify):
        return None  # one server per SQLite database: nobody else to tell
    steps = getattr(q, step.name)
    if isinstance(steps, ReadBack | TakeNext | WriteAll):  # a statement run as several
        return steps(c, step.args)
    sql, args = bind(q, step)
    if sql is None or step.result == "many":
        if sql is not None:
            c.executemany(sql, args)
        return None
    cur = c.execute(sql, args)
    if step.result == "one":
        return cur.fetchone()
    if step.result == "all":
        return cur.fetchall()
    return cur.rowcount if step.result == "count" else None
