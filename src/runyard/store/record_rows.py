"""Schedules, batches and run events from their rows: each read back whole, or named damaged.

SQLite keeps whatever a column is set to (a row rewritten behind the server's back, or
damaged in a page that still parses), and these rows were decoded on trust (a probe): a
schedule's `params` that was not JSON stopped the server from starting (the scheduler reads
every schedule first), one whose `next_fire_at` was text stopped the scheduler for every
schedule while readiness said ok, a batch whose `size` was text made every batch listing a
500, and an event whose data was not JSON every read of that run's events. As for runs
(rows.run_from_row): a listing leaves a damaged record out, named in the log; a batch read
alone is a `500 record-damaged` naming it and the column; a schedule, which the API serves
from the scheduler's copies, is left out of them (404; a DELETE still removes it); an event
that cannot be read is left out of its run's events, named."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import structlog

from runyard.errors import RecordDamagedError
from runyard.models import Batch, RunEvent, Schedule
from runyard.store.rows import is_time, loads

log = structlog.get_logger("runyard.store")
T = TypeVar("T")

OVERLAPS = ("skip", "queue", "allow")
CATCH_UPS = ("once", "none")


def schedule_from_row(r: tuple[Any, ...]) -> Schedule:
    """The schedule a row records; RecordDamagedError naming the column if it cannot be."""
    params, labels = _json_object(r, 2, "params"), _json_object(r, 4, "labels")
    for column, why in _schedule_damage(r, labels):
        raise RecordDamagedError(str(r[0])[:80], column, why, kind="schedule")
    return Schedule(
        id=r[0], job=r[1], params=params, priority=r[3], labels=labels, cron=r[5],
        interval_s=r[6], overlap=r[7], catch_up=r[8], paused=bool(r[9]), created_at=r[10],
        last_fired_at=r[11], fire_count=r[12], skip_count=r[13], last_run_id=r[14],
        next_fire_at=r[15], pending=bool(r[16]), fail_count=r[17], last_error=r[18],
        version=r[19],
    )  # fmt: skip


def _schedule_damage(r: tuple[Any, ...], labels: dict[str, Any]) -> Iterator[tuple[str, str]]:
    if not all(type(v) is str for v in labels.values()):
        yield "labels", "a value that is not text"
    for column, at, sound in _SCHEDULE_COLUMNS:
        if not sound(r[at]):
            yield column, _WHY[sound]
    if (r[5] is None) == (r[6] is None):
        yield "cron", "neither or both of cron and interval_s"
    if r[7] not in OVERLAPS:
        yield "overlap", f"{str(r[7])[:40]!r} is none of {', '.join(OVERLAPS)}"
    if r[8] not in CATCH_UPS:
        yield "catch_up", f"{str(r[8])[:40]!r} is none of {', '.join(CATCH_UPS)}"


def _text(v: Any) -> bool:
    return type(v) is str


def _text_or_none(v: Any) -> bool:
    return v is None or type(v) is str


def _count(v: Any) -> bool:
    # one the server can still add to: 2^63 - 1 failed every fire of its schedule (a probe)
    return type(v) is int and 0 <= v < 2**53


def _count_or_none(v: Any) -> bool:
    return v is None or type(v) is int


def _time_or_none(v: Any) -> bool:
    return v is None or is_time(v)


def _seconds_or_none(v: Any) -> bool:
    return v is None or (is_time(v) and v > 0)


_WHY: dict[Callable[[Any], bool], str] = {
    _text: "not text", _text_or_none: "not text", _count: "not a count (0 to 2^53)",
    _count_or_none: "not an integer", is_time: "not a time", _time_or_none: "not a time",
    _seconds_or_none: "not a number of seconds",
}  # fmt: skip
_SCHEDULE_COLUMNS: tuple[tuple[str, int, Callable[[Any], bool]], ...] = (
    ("id", 0, _text), ("job", 1, _text), ("priority", 3, _count_or_none),
    ("cron", 5, _text_or_none), ("interval_s", 6, _seconds_or_none), ("created_at", 10, is_time),
    ("last_fired_at", 11, _time_or_none), ("fire_count", 12, _count), ("skip_count", 13, _count),
    ("last_run_id", 14, _text_or_none), ("next_fire_at", 15, _time_or_none),
    ("fail_count", 17, _count), ("last_error", 18, _text_or_none), ("version", 19, _count),
)  # fmt: skip


def batch_from_row(row: tuple[Any, ...]) -> Batch:
    """The batch a row records; RecordDamagedError naming the column if it cannot be."""
    request = _json_object(row, 4, "request", kind="batch")
    checks = (("id", type(row[0]) is str), ("job", type(row[1]) is str),
              ("size", type(row[2]) is int and row[2] >= 0), ("created_at", is_time(row[3])),
              ("idempotency_key", row[5] is None or type(row[5]) is str))  # fmt: skip
    for column, sound in checks:
        if not sound:
            raise RecordDamagedError(str(row[0])[:80], column, "not of its type", kind="batch")
    return Batch(row[0], row[1], row[2], row[3], request, row[5])


def event_from_row(r: tuple[Any, ...]) -> RunEvent | None:
    """A run's event, or None (named in the log) if its row cannot be read back as one."""
    try:
        data = loads(r[4])
    except (ValueError, TypeError, RecursionError):
        data = None
    if type(data) is dict and type(r[1]) is int and is_time(r[2]) and type(r[3]) is str:
        return RunEvent(r[0], r[1], r[2], r[3], data)
    log.warning("damaged_event_skipped", run_id=str(r[0])[:80], seq=r[1])
    return None


def readable_records(
    found: list[tuple[Any, ...]], decode: Callable[[tuple[Any, ...]], T]
) -> list[T]:
    """What a listing's rows record, each damaged record left out and named in the log."""
    out = []
    for row in found:
        try:
            out.append(decode(row))
        except RecordDamagedError as exc:
            log.warning(f"damaged_{exc.kind}_skipped", id=exc.run_id, column=exc.column,
                        error=exc.detail)  # fmt: skip
    return out


def _json_object(r: tuple[Any, ...], at: int, column: str, kind: str = "schedule") -> Any:
    try:
        value = loads(r[at])
    except (ValueError, TypeError, RecursionError):
        raise RecordDamagedError(str(r[0])[:80], column, "not JSON", kind=kind) from None
    if type(value) is not dict:
        raise RecordDamagedError(str(r[0])[:80], column, "not a JSON object", kind=kind)
    return value
