"""Rows to models and back: one column order for every backend (SQLite returns JSON as text,
PostgreSQL's jsonb as objects; both decode here)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

from runyard import fastjson
from runyard.errors import RecordDamagedError
from runyard.models import Attempt, AttemptState, Run, RunState, Schedule

RUN_COLUMNS = (
    "id, job, params, state, priority, labels, batch_id, schedule_id, idempotency_key, "
    "request_hash, created_at, started_at, finished_at, attempt, exit_code, reason, progress, "
    "not_before, cancel_requested, spec, progress_skipped"
)
ATTEMPT_COLUMNS = (
    "run_id, number, state, host, created_at, pid, pgid, proc_start_time, started_at, ended_at, "
    "exit_code, signal, outcome, peak_rss_kb, lease_token"
)
# what a schedule's write sets (its version is the store's to move), and what is read
SCHEDULE_WRITTEN = (
    "id, job, params, priority, labels, cron, interval_s, overlap, catch_up, paused, "
    "created_at, last_fired_at, fire_count, skip_count, last_run_id, next_fire_at, pending, "
    "fail_count, last_error"
)
SCHEDULE_WIDTH = SCHEDULE_WRITTEN.count(",") + 1
SCHEDULE_COLUMNS = SCHEDULE_WRITTEN + ", version"


def dumps(value: Any) -> str:
    return fastjson.dumps(value).decode()


def loads(value: Any) -> Any:
    """A stored JSON value back; json (through fastjson) reads whatever earlier versions
    wrote that orjson would refuse or change (NaN, a lone surrogate, a very long integer)."""
    if isinstance(value, str | bytes):
        return fastjson.loads(value)
    return value  # PostgreSQL's jsonb arrives parsed


def spec_loads(value: Any) -> Any:
    """A run's stored job spec back. Every run of a job stores the same text, read back with
    every claim and every end: parsed once per distinct text, and the one dict shared (a
    spec read from the store is never changed in place)."""
    return _spec_of_text(value) if isinstance(value, str) else loads(value)


@functools.lru_cache(maxsize=256)
def _spec_of_text(text: str) -> Any:
    return fastjson.loads(text)


# 9999-12-31T23:59:59Z: a time past it has no datetime, and its answer was a 500
MAX_TIME = 253_402_300_799.0


def is_time(value: Any) -> bool:
    """Whether a column holds a time runyard could have written: a number, 1970 to 9999."""
    return (
        isinstance(value, int | float) and not isinstance(value, bool)
        and math.isfinite(value) and 0 <= value <= MAX_TIME
    )  # fmt: skip


def _time(value: Any) -> float | None:
    """A timestamp column as a number, or None. SQLite keeps whatever was written, whatever
    the column's type: a value an older version stored from a damaged exit file ("yesterday",
    NaN, 1e12) must not make every read of the run, and every list holding it, fail."""
    return float(value) if is_time(value) else None


def _text(value: Any) -> str | None:
    return value if type(value) is str else None


def _ref(value: Any) -> str | None:
    """A run's reference to something else (its batch, its schedule, a key) as text, or
    unknown: a blob there made every page of runs that held it a 500 (a probe)."""
    if type(value) is str:
        return value
    return str(value) if type(value) is int else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# A page of 500 runs of 1 MB params each was a 500 MB answer (seconds to make, and its memory
# several times over): a listing's page ends past this much stored JSON, its cursor there.
PAGE_BYTES = 8 * 2**20


def page_of(found: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The first of a listing's run rows, up to PAGE_BYTES of params, labels and progress
    (at least one: a run is never too large to list)."""
    weight = 0
    for n, row in enumerate(found):
        weight += _json_bytes(row[2]) + _json_bytes(row[5]) + _json_bytes(row[16])
        if weight > PAGE_BYTES and n > 0:
            return found[:n]
    return found


def _json_bytes(value: Any) -> int:
    """A stored JSON value's size: its text (SQLite), or PostgreSQL's jsonb encoded again."""
    if value is None:
        return 0
    if isinstance(value, str | bytes):
        return len(value)
    return len(fastjson.dumps(value))


def run_from_row(row: tuple[Any, ...]) -> Run:
    """The run a row records; RecordDamagedError, naming the column, if the row cannot be
    read back as one (SQLite keeps whatever a column was set to, behind the server's back:
    one such row must fail its own reads, not every listing that holds it)."""
    try:
        run = Run(
            id=row[0], job=row[1], params=loads(row[2]), state=RunState(row[3]),
            priority=row[4], labels=loads(row[5]), batch_id=_ref(row[6]),
            schedule_id=_ref(row[7]), idempotency_key=_ref(row[8]), request_hash=_ref(row[9]),
            created_at=row[10],
            started_at=_time(row[11]), finished_at=_time(row[12]), attempt=row[13],
            exit_code=_int(row[14]), reason=row[15],
            progress=loads(row[16]) if row[16] else None, not_before=_time(row[17]),
            cancel_requested=bool(row[18]), spec=spec_loads(row[19]), progress_skipped=row[20],
        )  # fmt: skip
    except (ValueError, TypeError, RecursionError) as exc:  # not JSON (or too deep for it),
        # or a state no version wrote
        raise damaged_run(row) from exc
    if not _sound(run):
        raise damaged_run(row)
    return run


def _sound(run: Run) -> bool:
    """What every reader of a run takes for granted, and a column set behind the server's
    back may not hold (the JSON columns objects, the numbers numbers)."""
    return (
        type(run.params) is dict and type(run.labels) is dict and type(run.spec) is dict
        and (run.progress is None or type(run.progress) is dict)
        and all(type(v) is str for v in run.labels.values())
        and type(run.id) is str and type(run.job) is str
        and type(run.priority) is int and type(run.attempt) is int
        and type(run.progress_skipped) is int and _time(run.created_at) is not None
        and (run.reason is None or type(run.reason) is str)
    )  # fmt: skip


def damaged_run(row: tuple[Any, ...]) -> RecordDamagedError:
    """Which column of a run's row cannot be read back, and why (only on the error path)."""
    column, why = next(_damage(row), ("job, created_at or reason", "not of its type"))
    return RecordDamagedError(str(row[0])[:80], column, why)


def _damage(row: tuple[Any, ...]) -> Iterator[tuple[str, str]]:
    if not isinstance(row[0], str):
        yield "id", "not text"
    try:
        RunState(row[3])
    except ValueError:
        yield "state", f"{str(row[3])[:40]!r} is no run's state"
    for column, at in (("params", 2), ("labels", 5), ("progress", 16), ("spec", 19)):
        if at == 16 and not row[at]:
            continue
        try:
            value = loads(row[at])
        except (ValueError, TypeError, RecursionError):
            yield column, "not JSON"
            continue
        if type(value) is not dict:
            yield column, "not a JSON object"
        elif column == "labels" and not all(type(v) is str for v in value.values()):
            yield column, "a value that is not text"
    for column, at in (("priority", 4), ("attempt", 13), ("progress_skipped", 20)):
        if type(row[at]) is not int:
            yield column, "not an integer"


def run_to_row(r: Run, dump: Callable[[Any], str] = dumps) -> tuple[Any, ...]:
    return (
        r.id, r.job, dump(r.params), r.state.value, r.priority, dump(r.labels), r.batch_id,
        r.schedule_id, r.idempotency_key, r.request_hash, r.created_at, r.started_at,
        r.finished_at, r.attempt, r.exit_code, r.reason,
        dumps(r.progress) if r.progress is not None else None, r.not_before,
        r.cancel_requested, dump(r.spec), r.progress_skipped,
    )  # fmt: skip


def shared_dumps() -> Callable[[Any], str]:
    """`dumps` that writes each object once: a batch's runs share one spec and one labels
    object, which would otherwise be encoded again for every run. Only while those live."""
    texts: dict[int, tuple[Any, str]] = {}

    def dump(value: Any) -> str:
        found = texts.get(id(value))
        if found is None or found[0] is not value:
            found = texts[id(value)] = (value, dumps(value))
        return found[1]

    return dump


def attempt_from_row(row: tuple[Any, ...]) -> Attempt:
    try:
        state = AttemptState(row[2])
    except ValueError:
        why = f"{str(row[2])[:40]!r} is no attempt's state"
        raise RecordDamagedError(str(row[0])[:80], f"attempt {row[1]}'s state", why) from None
    # the rest read as unknown where damaged: an attempt is listed with every other in a
    # reconcile, which must not fail for one (its host as text: a blob answered a 500)
    host = row[3] if type(row[3]) is str else repr(row[3])[:80]
    return Attempt(
        run_id=row[0], number=row[1], state=state, host=host,
        created_at=_time(row[4]) or 0.0, pid=_int(row[5]), pgid=_int(row[6]),
        proc_start_time=_time(row[7]), started_at=_time(row[8]), ended_at=_time(row[9]),
        exit_code=_int(row[10]), signal=_int(row[11]), outcome=_text(row[12]),
        peak_rss_kb=_int(row[13]), lease_token=_text(row[14]),
    )  # fmt: skip


def attempt_to_row(a: Attempt) -> tuple[Any, ...]:
    return (
        a.run_id, a.number, a.state.value, a.host, a.created_at, a.pid, a.pgid,
        a.proc_start_time, a.started_at, a.ended_at, a.exit_code, a.signal, a.outcome,
        a.peak_rss_kb, a.lease_token,
    )  # fmt: skip


def schedule_to_row(s: Schedule) -> tuple[Any, ...]:
    return (
        s.id, s.job, dumps(s.params), s.priority, dumps(s.labels), s.cron, s.interval_s,
        s.overlap, s.catch_up, s.paused, s.created_at, s.last_fired_at, s.fire_count,
        s.skip_count, s.last_run_id, s.next_fire_at, s.pending, s.fail_count, s.last_error,
    )  # fmt: skip
