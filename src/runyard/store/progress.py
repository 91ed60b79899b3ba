"""A run's progress and events as units of work (units.py), beside the rest of the store's
algorithms (logic.py): what a program writes as progress, bounded where it is stored."""

from __future__ import annotations

from typing import Any

from runyard import fastjson
from runyard.models import RunEvent
from runyard.store.record_rows import event_from_row
from runyard.store.rows import dumps
from runyard.store.units import Unit, execute, one, rows

# A run's events are stored up to this many, and its progress events up to this many bytes
# in all; past either, only its state changes are, and its latest progress is still kept on
# the run. What a program writes cannot grow the store without bound: a million lines were a
# million rows, and 10,000 lines of 64 KiB each, stored while anyone watched, 640 MB a run
# (a probe) that deleting the run did not give back to the disk.
MAX_RUN_EVENTS = 10_000
MAX_RUN_PROGRESS_BYTES = 16 * 2**20


def add_progress(
    run_id: str, attempt: int, events: list[tuple[float, dict[str, Any]]], offset: int, skipped: int
) -> Unit[None]:
    held = yield one("LOCK_RUN_PROGRESS", run_id)  # the events' numbering, the bytes so far
    stored = 0
    if events and held is not None:
        (last,) = yield one("LAST_EVENT_SEQ", run_id)
        room = MAX_RUN_EVENTS - int(last)
        budget = MAX_RUN_PROGRESS_BYTES - int(held[0])
        for at, data in events[max(0, len(events) - room) :] if room > 0 else ():
            text = fastjson.dumps(data | {"attempt": attempt})
            if len(text) > budget - stored:
                break  # the run's share is spent: the latest is still saved, below
            stored += len(text)
            # numbered under the run's row lock (PostgreSQL) or the write lock (SQLite)
            yield execute("ADD_EVENT", run_id, at, "progress", text.decode(), run_id)
    latest = dumps(events[-1][1]) if events else None
    yield execute("SAVE_PROGRESS", latest, skipped, stored, run_id)
    yield execute("SET_PROGRESS_OFFSET", offset, run_id, attempt)


def progress_offset(run_id: str, attempt: int) -> Unit[int]:
    row = yield one("GET_PROGRESS_OFFSET", run_id, attempt)
    return int(row[0]) if row else 0


def list_events(run_id: str, after: int, limit: int) -> Unit[list[RunEvent]]:
    """Up to `limit` events after `after`; fewer only at the end (a damaged one, left out, is
    made up for from the rows after it: callers take a short page for the last)."""
    out: list[RunEvent] = []
    while len(out) < limit:
        want = limit - len(out)
        found = yield rows("LIST_EVENTS", run_id, after, want)
        out.extend(e for r in found if (e := event_from_row(r)) is not None)
        if len(found) < want:
            break
        after = found[-1][1]
    return out


def last_event_seq(run_id: str) -> Unit[int]:
    row = yield one("LAST_EVENT_SEQ", run_id)
    return int(row[0]) if row else 0
