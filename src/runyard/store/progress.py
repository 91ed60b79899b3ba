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


FIRST_ROWS = 4  # read first when a page is bounded in bytes: sizes the reads after it
READ_ROWS = 64  # at most, a read of a page bounded in bytes: 4 MiB of 64 KiB events


def list_events(
    run_id: str, after: int, limit: int, max_bytes: int | None = None
) -> Unit[list[RunEvent]]:
    """Up to `limit` events after `after`; fewer only at the end (a damaged one, left out, is
    made up for from the rows after it: callers take a short page for the last), or, with
    `max_bytes`, once their data's text has reached it (one event at least). Rows are read
    a few first, then as many as the bytes left would take at the size seen, READ_ROWS at
    most: a page of big events is never read whole to be cut (a run's progress events are
    up to 64 KiB each, and small ones may come first)."""
    out: list[RunEvent] = []
    size = seen = 0
    while len(out) < limit and (max_bytes is None or size < max_bytes):
        want = limit - len(out)
        if max_bytes is not None:
            each = size // seen if seen else max_bytes // FIRST_ROWS
            want = min(want, READ_ROWS, max(1, (max_bytes - size) // max(each, 1) + 1))
        found = yield rows("LIST_EVENTS", run_id, after, want)
        for r in found:
            after = r[1]
            if (event := event_from_row(r)) is None:
                continue
            out.append(event)
            size += r[5] if type(r[5]) is int else 0
            seen += 1
            if max_bytes is not None and size >= max_bytes:
                break
        if len(found) < want:
            break
    return out


def last_event_seq(run_id: str) -> Unit[int]:
    row = yield one("LAST_EVENT_SEQ", run_id)
    return int(row[0]) if row else 0
