"""Statements SQLite runs as more than one: a write of `runs` without its RETURNING, then the
rows it wrote read back by id.

On SQLite (3.40, measured on the hot path's statements) RETURNING on a table whose triggers
fire (the state events', migration 0008) costs about four times the statement: a run's claim
by id took 57 µs with RETURNING, 12 µs without, 19 µs with the read back; the queue's claim,
an UPDATE of the runs its subquery picks, 108 µs against 24 µs for the pick, the update by id
and the read. The logic asks for the rows as ever (logic.py); this module gives them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ReadBack:
    """`sql`, a write of one run whose id is its parameter `id_at`; then the run as written
    (`read`), or None if the write changed no row (its WHERE did not hold, or a conflict
    was ignored): what `sql ... RETURNING` would have given. With no `read`, the row is the
    id alone, which the write was given: nothing to read."""

    sql: str
    id_at: int
    read: str | None = None

    def __call__(self, c: sqlite3.Connection, args: Any) -> Any:
        if c.execute(self.sql, args).rowcount < 1:
            return None
        if self.read is None:
            return (args[self.id_at],)
        return c.execute(self.read, (args[self.id_at],)).fetchone()


@dataclass(frozen=True, slots=True)
class TakeNext:
    """The queue's claim: the ids `pick` finds (named parameters `now`, `limit`), each taken
    by `take` (parameters now, now, id), then read back by `read`. Within the write
    transaction, which holds SQLite's one write lock, none can change in between."""

    pick: str
    take: str
    read: str

    def __call__(self, c: sqlite3.Connection, args: dict[str, Any]) -> list[Any]:
        ids = [row[0] for row in c.execute(self.pick, args).fetchall()]
        now = args["now"]
        taken = []
        for run_id in ids:
            if c.execute(self.take, (now, now, run_id)).rowcount == 1:
                taken.append(c.execute(self.read, (run_id,)).fetchone())
        return taken


@dataclass(frozen=True, slots=True)
class WriteAll:
    """One write of many runs (`sql`), the runs it is about to change picked first by `pick`
    (its parameters the write's from `pick_from` on), then each read back by `read` (id):
    what `sql ... RETURNING` would have given. Within the write transaction, which holds
    SQLite's one write lock, none can change in between."""

    pick: str
    sql: str
    read: str
    pick_from: int

    def __call__(self, c: sqlite3.Connection, args: Any) -> list[Any]:
        ids = [row[0] for row in c.execute(self.pick, args[self.pick_from :]).fetchall()]
        if not ids or c.execute(self.sql, args).rowcount < 1:
            return []
        return [c.execute(self.read, (run_id,)).fetchone() for run_id in ids]
