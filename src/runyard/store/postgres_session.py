"""What a PostgreSQL store needs beyond pooled transactions: connections held for the life of
the server. One LISTENs, so other servers' submissions wake this one's dispatcher at once; one
holds the scheduler's advisory lock, so one server at a time fires schedules (the lock goes
with its session: if that server dies, PostgreSQL releases it and another takes over).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from psycopg import AsyncConnection, Error

from runyard.background import Background
from runyard.store import postgres_sql as q

log = structlog.get_logger(__name__)

Handlers = Mapping[str, Callable[[str], None]]


class Listener:
    def __init__(self, dsn: str, kwargs: dict[str, Any], handlers: Handlers) -> None:
        self.dsn = dsn
        self.kwargs = kwargs
        self.handlers = dict(handlers)
        self._task = Background("pg-listen")
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task.start(self._loop())

    async def stop(self) -> None:
        await self._task.stop()

    async def _loop(self) -> None:
        retry = 0.5
        while True:
            try:
                async with await AsyncConnection.connect(self.dsn, **self.kwargs) as conn:
                    for channel in self.handlers:
                        await conn.execute(q.listen(channel))
                    self.connected.set()
                    retry = 0.5
                    for handler in self.handlers.values():
                        handler("")  # whatever was said while we were not listening
                    async for note in conn.notifies():
                        heard = self.handlers.get(note.channel)
                        if heard is not None:
                            heard(note.payload)
            except Error as exc:
                self.connected.clear()
                log.warning("listen_reconnecting", error=str(exc), retry_s=retry)
                await asyncio.sleep(retry)  # the database is away: back off, then reconnect
                retry = min(retry * 2, 10.0)


class Leadership:
    """`pg_try_advisory_lock` on a connection of its own: held while that session lives."""

    def __init__(self, dsn: str, kwargs: dict[str, Any], key: int) -> None:
        self.dsn = dsn
        self.kwargs = kwargs
        self.key = key
        self._conn: AsyncConnection[Any] | None = None
        self._name: str | None = None  # what the session holding the lock is named

    async def try_lead(self, server_id: str | None = None, life: str | None = None) -> bool:
        """The lock, held or taken. Its session is named for the life that leads (its lease
        token; else its server id): a leader whose own lease has lapsed (paused, or cut off
        with its session half open, which PostgreSQL may keep for hours), or whose id another
        life holds now (a replacement host under the same name, renewing the id's lease),
        would hold the lock, and nothing would fire, for as long as that session lives. It is
        ended and the lock taken; back, the old leader finds its session gone and stands by."""
        name = _session_name(server_id, life)
        if self._conn is not None and name != self._name:
            await self.release()  # a new life of this server: it leads under its own name
        if self._conn is not None:
            try:
                await self._conn.execute(q.PING)  # still our session, so still our lock
            except Error:
                await self.release()
            else:
                return True
        return await self._take(name)

    async def _take(self, name: str | None) -> bool:
        """The lock in a new session named `name`, if free or held by a silent leader."""
        kwargs = dict(self.kwargs)
        if name is not None:
            kwargs["application_name"] = name
        try:
            conn = await AsyncConnection.connect(self.dsn, **kwargs)
        except Error as exc:
            log.warning("leadership_unavailable", error=str(exc))
            return False
        try:
            row = await (await conn.execute(q.TRY_LEAD, (self.key,))).fetchone()
            if not (row and row[0]) and await self._end_lapsed_leader(conn):
                row = await (await conn.execute(q.TRY_LEAD, (self.key,))).fetchone()
        except Error as exc:
            log.warning("leadership_unavailable", error=str(exc))
            row = None
        if row and row[0]:
            self._conn, self._name = conn, name
            return True
        with contextlib.suppress(Error):
            await conn.close()
        return False

    async def _end_lapsed_leader(self, conn: AsyncConnection[Any]) -> bool:
        found = await (
            await conn.execute(q.SILENT_LEADER, (self.key >> 32, self.key & 0xFFFFFFFF))
        ).fetchone()
        if found is None:
            return False
        ended = await (await conn.execute(q.END_SESSION, (found[0],))).fetchone()
        log.warning("silent_leader_replaced", backend=found[0], ended=bool(ended and ended[0]))
        return bool(ended and ended[0])

    async def release(self) -> None:
        """Let go at once (a standby takes over at its next try), then end the session; a
        session already broken let go with its end."""
        if self._conn is not None:
            with contextlib.suppress(Error):
                await self._conn.execute(q.STOP_LEADING, (self.key,))
            with contextlib.suppress(Error):
                await self._conn.close()
            self._conn = None


def _session_name(server_id: str | None, life: str | None) -> str | None:
    if life is not None:
        return f"{q.LIFE_NAME}{life}"
    return None if server_id is None else f"{q.LEADER_NAME}{server_id}"[:63]
