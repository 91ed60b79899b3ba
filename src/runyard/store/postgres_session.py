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

    async def try_lead(self) -> bool:
        if self._conn is not None:
            try:
                await self._conn.execute(q.PING)  # still our session, so still our lock
            except Error:
                await self.release()
            else:
                return True
        try:
            conn = await AsyncConnection.connect(self.dsn, **self.kwargs)
            row = await (await conn.execute(q.TRY_LEAD, (self.key,))).fetchone()
        except Error as exc:
            log.warning("leadership_unavailable", error=str(exc))
            return False
        if row and row[0]:
            self._conn = conn
            return True
        await conn.close()
        return False

    async def release(self) -> None:
        """Let go at once (a standby takes over at its next try), then end the session; a
        session already broken let go with its end."""
        if self._conn is not None:
            with contextlib.suppress(Error):
                await self._conn.execute(q.STOP_LEADING, (self.key,))
            with contextlib.suppress(Error):
                await self._conn.close()
            self._conn = None
