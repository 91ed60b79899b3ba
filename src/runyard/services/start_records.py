"""Start records: an attempt's pid and process start time, written as soon as its program
runs — the starts heard in one turn of the event loop in one store write, after that turn —
and not at all for a program whose end is heard in the same turn (that end carries the same
pid and start).

Recovery, with no supervisor left to ask, checks a leftover program and an exit file against
this record: written later (it was tried: held 50 ms so that most short programs' ends came
first, one store write per run fewer), a server killed in that window left an attempt with
no start, and an exit file its program forged beside it was believed. So nothing waits for
it, but it is not put off. Whoever reads the records (a reconcile pass, a stop) asks for
what is held first (`written`).
"""

from __future__ import annotations

import asyncio

import structlog

from runyard.background import TaskGroup
from runyard.store import Store

log = structlog.get_logger(__name__)

StartRecord = tuple[str, int, int, int, float, float]  # run id, attempt, pid, pgid, start, at


class StartRecords:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._due: dict[str, StartRecord] = {}  # by attempt key
        self._due_soon = False  # a flush is due at the end of this turn
        self._writes = TaskGroup("start_writes")

    def hold(self, key: str, record: StartRecord) -> None:
        """The program runs: its record goes out with this turn's others, unless its end is
        heard in the same turn."""
        self._due[key] = record
        if not self._due_soon:
            self._due_soon = True
            asyncio.get_running_loop().call_soon(self.flush)

    def ended(self, key: str) -> None:
        """Its end was heard: that end, written next, carries its pid and start."""
        self._due.pop(key, None)

    def flush(self) -> None:
        """What is held goes to the store now, in one write (not waited for)."""
        self._due_soon = False
        if self._due:
            records, self._due = list(self._due.values()), {}
            self._writes.start(self._write(records))

    async def written(self) -> None:
        """Once every record held or handed to the store so far is written (or failed). A
        caller cancelled meanwhile (a reconcile pass at shutdown) is; the writes go on."""
        self.flush()
        await self._writes.ended()

    async def _write(self, records: list[StartRecord]) -> None:
        try:
            await self.store.attempts_started(records)
        except Exception as exc:  # a full disk: each end, recorded later, carries its start
            log.warning(
                "attempt_start_not_written", error=str(exc), attempts=len(records),
                run_ids=[r[0] for r in records[:10]],
            )  # fmt: skip
