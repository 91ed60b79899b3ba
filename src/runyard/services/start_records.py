"""Start records: an attempt's pid and process start time, written a little after its program
starts, several in one store write, and not at all for a program whose end is heard first.

A start record is not one of the promises a run's durability rests on (the run before its
202, the attempt before its spawn, the exit file before the outcome): it is what a reconcile
pass, with no supervisor left to ask, checks a leftover program and an exit file against.
So it need not be written the moment the program runs. Held for `DELAY_S`, most short
programs end meanwhile, and their end, which carries the same pid and start, is the only
write (one fewer per run: a short program's start was a store write, a task and a wake of
the store's thread for a record its end replaced within milliseconds). The rest leave
together, one write for every start of the window.

A process that dies inside the window leaves the attempt as a failed start write does:
`starting`, its log beside it, so recovery counts it as run (`lost`, spent), as before.
Whoever reads the records (a reconcile pass, a stop) asks for what is held first
(`written`)."""

from __future__ import annotations

import asyncio

import structlog

from runyard.background import TaskGroup
from runyard.store import Store

log = structlog.get_logger(__name__)

DELAY_S = 0.05  # long enough for a short program's end, short enough not to be seen
StartRecord = tuple[str, int, int, int, float, float]  # run id, attempt, pid, pgid, start, at


class StartRecords:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._due: dict[str, StartRecord] = {}  # by attempt key
        self._timer: asyncio.TimerHandle | None = None
        self._writes = TaskGroup("start_writes")

    def hold(self, key: str, record: StartRecord) -> None:
        """The program runs: its record goes out with the window's others, unless its end
        is heard first."""
        self._due[key] = record
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(DELAY_S, self.flush)

    def ended(self, key: str) -> None:
        """Its end was heard: that end, written next, carries its pid and start."""
        self._due.pop(key, None)

    def flush(self) -> None:
        """What is held goes to the store now, in one write (not waited for)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
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
