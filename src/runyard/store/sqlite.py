"""The SQLite store: WAL, busy_timeout, short BEGIN IMMEDIATE transactions on one DB thread.

Plain DB-API rather than an ORM: the statements are few and hot (a submit, a claim, an end
per run), and every unit of work runs whole on a dedicated thread, which both keeps SQLite off
the event loop and makes each method's transaction atomic without interleaving. The
algorithms are logic.py's; this module holds the connection, its errors and the file check.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

from runyard import failpoints
from runyard.errors import (
    StorageFullError,
    StorageIOError,
    StoreBusyError,
    StoreDamagedError,
    storage_error,
    store_damaged,
)
from runyard.store import sqlite_sql as q
from runyard.store.group_commit import GroupCommit, Pending
from runyard.store.migrations import migration_files, sqlite_statements
from runyard.store.schema_version import NewerSchemaError, newer_than_known
from runyard.store.sqlite_reads import DAMAGED, Reads, execute
from runyard.store.sqlstore import COMMIT, SQLStore
from runyard.store.units import Make, drive, name_of

T = TypeVar("T")

# The reads' connection (sqlite_reads.py) can keep SQLite's automatic checkpoint from ever
# rewinding the WAL while reads follow each other closely: every WAL_CHECK_EVERY writes the
# writer looks at its size, and past WAL_LIMIT_BYTES waits for the reads under way (one
# statement each) and rewinds it; journal_size_limit then cuts the file back to that size.
WAL_LIMIT_BYTES = 64 * 2**20
WAL_CHECK_EVERY = 100
REWIND_WAIT_MS = 100


class SQLiteStore(SQLStore):
    claims_see_every_run = True  # one connection, one writer: nothing is ever skipped

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 5000,
        observe: Callable[[str, float], None] | None = None,
        wal_limit_bytes: int = WAL_LIMIT_BYTES,
    ) -> None:
        super().__init__()
        self.path = path
        self._wal_limit = wal_limit_bytes
        self._writes = 0  # units committed: the WAL's size is looked at every WAL_CHECK_EVERY
        self._observe = observe
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened
        self._write_point = COMMIT  # the failpoint of the write in progress
        # One thread owns the connection: calls queue up instead of contending for the lock.
        self._group: GroupCommit | None = None  # its thread, from open() to close()
        self._reads = Reads(path, busy_timeout_ms)  # reads: a connection and thread of their own
        # Damaged pages, once met by a read or a write: readiness says so until a restart
        # (damage does not heal, and a probe write to the header page would succeed)
        self._damaged: str | None = None

    # -- transactions -----------------------------------------------------------------------

    async def _read(self, make: Make[T]) -> T:
        try:
            return await self._observed(make, self._reads.read(make))
        except StoreDamagedError as exc:
            self._damaged = str(exc)
            raise

    async def _write(self, make: Make[T], point: str = COMMIT) -> T:
        return cast(T, await self._observed(make, self._thread().submit(make, point)))

    async def _observed(self, make: Make[Any], work: Awaitable[T]) -> T:
        """`work`, its latency labelled with the Store method `make` implements."""
        if self._observe is None:
            return await work
        started = time.perf_counter()
        try:
            return await work
        finally:
            self._observe(name_of(make), time.perf_counter() - started)

    def _thread(self) -> GroupCommit:
        if self._group is None:
            raise StoreBusyError("the store is not open")
        return self._group

    def _run_group(self, writes: list[Pending]) -> None:
        """On the store thread: the group's writes in one transaction (reads are `Reads`')."""
        conn = self._conn
        if conn is None:
            for p in writes:
                p.fail(StoreBusyError("the store is not open"))
            return
        if (failed := self._commit_whole(conn, writes)) is not None:
            rest = [p for p in writes if p is not failed]
            for p in rest:  # undone with the transaction: each is run again
                p.fail(RuntimeError("never run"))
            if rest:
                self._commit_each(conn, rest)

    def _commit_whole(self, conn: sqlite3.Connection, writes: list[Pending]) -> Pending | None:
        """Every write of the group in one transaction and nothing more: no savepoint per
        unit. On the store's thread every statement gives up the GIL and takes it back from a
        busy event loop, which costs more there than the statement itself; a failure is rare
        (a bug's refusal, a failpoint, the disk), so it pays instead: the whole transaction
        is undone, and the unit that failed is returned for the others to run again."""
        if not self._begin(conn, writes):
            return None
        for p in writes:
            point = self._write_point = p.point or COMMIT
            try:
                p.succeed(drive(cast("Make[Any]", p.make)(), partial(execute, conn)))
                failpoints.check(point)
            except Exception as exc:
                p.fail(self._error(exc, point))
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # gone with its file: BEGIN says
                        conn.rollback()
                return p
        self._commit(conn, writes)
        return None

    def _commit_each(self, conn: sqlite3.Connection, writes: list[Pending]) -> None:
        """The writes of a group whose one transaction failed: each in its own savepoint, so
        that one failing again is undone alone, its neighbours unharmed."""
        alone = len(writes) == 1  # no savepoint: the transaction is the unit's
        if not self._begin(conn, writes):
            return
        done: list[Pending] = []
        for p in writes:
            point = self._write_point = p.point or COMMIT
            try:
                if not alone:
                    conn.execute(q.SAVEPOINT)
                p.succeed(drive(cast("Make[Any]", p.make)(), partial(execute, conn)))
                failpoints.check(point)
            except Exception as exc:
                p.fail(self._error(exc, point))
                if not self._undo(conn, alone):
                    # SQLite rolled the whole transaction back (a full disk, an I/O error):
                    # what the group had done is gone with it
                    for d in done:
                        d.fail(p.error or exc)
                    done.clear()
                    if not self._begin_again(conn, writes, p):
                        return
                continue
            if not alone:
                conn.execute(q.RELEASE)
            done.append(p)
        self._commit(conn, done)

    def _undo(self, conn: sqlite3.Connection, alone: bool) -> bool:
        """Undo the failed unit; False when its transaction is gone altogether."""
        if not conn.in_transaction:
            return False
        if alone:
            conn.rollback()
            return True
        conn.execute(q.ROLLBACK_TO)
        conn.execute(q.RELEASE)
        return True

    def _begin_again(
        self, conn: sqlite3.Connection, writes: list[Pending], failed: Pending
    ) -> bool:
        rest = writes[writes.index(failed) + 1 :]
        return not rest or self._begin(conn, rest)

    def _begin(self, conn: sqlite3.Connection, writes: list[Pending]) -> bool:
        """BEGIN for `writes`; False, each of them failed with the reason, when it cannot."""
        try:
            conn.execute(q.BEGIN)
        except Exception as exc:
            for p in writes:
                p.fail(self._error(exc, p.point or COMMIT))
            return False
        return True

    def _commit(self, conn: sqlite3.Connection, done: list[Pending]) -> None:
        if not conn.in_transaction:
            return  # the last unit failed alone: its rollback ended the transaction
        try:
            self._check_file()
            conn.commit()
        except Exception as exc:
            if conn.in_transaction:
                conn.rollback()
            for p in done:
                p.fail(self._error(exc, p.point or COMMIT))
            return
        for p in done:
            self._written(p.point or COMMIT)
        # counted in writes, not commits: a group of many writes grows the WAL as much as
        # they would one by one, and under load groups grow (the store's thread yields)
        before, self._writes = self._writes, self._writes + len(done)
        if self._writes // WAL_CHECK_EVERY != before // WAL_CHECK_EVERY:
            self._bound_wal(conn)

    def _bound_wal(self, conn: sqlite3.Connection) -> None:
        try:
            size = os.stat(f"{self.path}-wal").st_size  # noqa: PTH116  on the store thread
        except OSError:
            return
        if size <= self._wal_limit:
            return
        # Waits for the reads under way, holding up the writes queued behind it: briefly. A
        # read still going then (busy) leaves it to the next look, 100 commits on. The group
        # has committed: nothing here may turn its callers' success into a failure.
        with contextlib.suppress(sqlite3.Error):
            conn.execute(q.busy_timeout(REWIND_WAIT_MS))
            try:
                conn.execute(q.REWIND_WAL).fetchone()
            finally:
                conn.execute(q.busy_timeout(self._busy_timeout_ms))

    def _error(self, exc: Exception, point: str) -> Exception:
        """What a caller hears of a failure on the store thread (storage errors mapped)."""
        self._write_point = point
        if isinstance(exc, OSError):  # a failpoint, or the file check
            return self._failed(storage_error(exc, "the database"), point)
        if isinstance(exc, sqlite3.DatabaseError):
            return self._mapped(exc)
        return exc

    async def _call(self, fn: Callable[[sqlite3.Connection], T], operation: str) -> T:
        """Run `fn` on the store thread; `operation` (the Store method) labels its latency."""
        if self._observe is None:
            return await self._thread().call(partial(self._guarded, fn))
        started = time.perf_counter()
        try:
            return await self._thread().call(partial(self._guarded, fn))
        finally:
            self._observe(operation, time.perf_counter() - started)

    def _guarded(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise StoreBusyError("the store is not open")
        try:
            return fn(self._conn)
        except OSError as exc:  # a failpoint, or the file check in _tx
            raise self._failed(storage_error(exc, "the database"), self._write_point) from exc
        except sqlite3.DatabaseError as exc:  # by its code: an IntegrityError stays itself
            mapped = self._mapped(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def _mapped(self, exc: sqlite3.DatabaseError) -> Exception:
        # extended result codes (SQLITE_IOERR_WRITE...) keep the primary code in the low byte
        extended = getattr(exc, "sqlite_errorcode", 0)
        code = extended & 0xFF
        if code in DAMAGED:  # a plain DatabaseError in Python, not an OperationalError
            damaged = store_damaged(self.path, exc)
            self._damaged = str(damaged)
            return self._failed(damaged, self._write_point)
        # the -shm index could not grow: on a full disk (ENOSPC), never a failing one
        if code == sqlite3.SQLITE_FULL or extended == sqlite3.SQLITE_IOERR_SHMSIZE:
            return self._failed(StorageFullError("the database's disk is full"), self._write_point)
        if code in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY):
            error = StorageIOError(f"the database cannot be written: {exc}")
            return self._failed(error, self._write_point)
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return StoreBusyError("the database is busy; try again")
        return exc

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
    def _tx(
        self,
        conn: sqlite3.Connection,
        point: str = COMMIT,
        *,
        wrote: Callable[[], bool] | None = None,
    ) -> Iterator[None]:
        """A write transaction; its failpoint is checked if it `wrote` (default: always)."""
        self._write_point = point
        conn.execute(q.BEGIN)
        try:
            yield
            self._check_file()
            if wrote is None or wrote():
                failpoints.check(point)
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        self._written(point)

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in q.pragmas(self._busy_timeout_ms, self._synchronous, self._wal_limit):
            conn.execute(pragma)
        st = os.stat(self.path)  # noqa: PTH116  the file the connection has just opened
        self._identity = (st.st_dev, st.st_ino)
        self._conn = conn
        self._migrate(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # Nothing to migrate writes nothing, and commits on a full disk too: a server started
        # there serves reads (its registration, a write, is refused and retried: runtime.py).
        before = (conn.total_changes, conn.execute(q.SCHEMA_VERSION).fetchone()[0])

        def wrote() -> bool:
            return (conn.total_changes, conn.execute(q.SCHEMA_VERSION).fetchone()[0]) != before

        with self._tx(conn, wrote=wrote):
            conn.execute(q.CREATE_MIGRATIONS)
            if conn.execute(q.LEGACY_MIGRATIONS).fetchone() is not None:
                for statement in q.ADOPT_LEGACY_MIGRATIONS:
                    conn.execute(statement)
            done = {v for (v,) in conn.execute(q.APPLIED_MIGRATIONS)}
            files = migration_files("sqlite")
            known = max(v for v, _, _ in files)
            if (newer := newer_than_known(self.path, done, known)) is not None:
                raise NewerSchemaError(newer)
            for version, name, sql in files:
                if version in done:
                    continue
                for statement in sqlite_statements(sql):
                    conn.execute(statement)
                conn.execute(q.RECORD_MIGRATION, (version, name, time.time()))

    # -- the Store contract: what the shared logic leaves to a backend ----------------------

    async def open(self) -> None:
        if self._group is None:
            self._group = GroupCommit(self._run_group, "runyard-sqlite")
        await self._group.call(self._connect)
        await self._reads.open()

    async def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._reads.close()
        if self._group is None:
            return
        await self._group.call(_close)
        await self._group.stop()
        self._group = None

    async def ping(self) -> None:
        await self._call(lambda c: c.execute(q.PING).fetchone(), "ping")

    async def health_problems(self) -> dict[str, str]:
        """Readiness: the file is the one opened; writes work again after one failed."""

        def op(c: sqlite3.Connection) -> dict[str, str]:
            if self._damaged is not None:
                return {"database": self._damaged}
            try:
                self._check_file()
            except OSError as exc:
                return {"database": str(exc.strerror)}
            failing = []
            for point, why in list(self.write_errors.items()):
                try:  # it failed last time: does one go through now? (a header-only write)
                    with self._tx(c, point):
                        version = c.execute(q.GET_USER_VERSION).fetchone()[0]
                        c.execute(q.set_user_version(version))
                except (OSError, sqlite3.Error):
                    failing.append(why)
            return {"store": "; ".join(failing)} if failing else {}

        return await self._call(op, "health_problems")
