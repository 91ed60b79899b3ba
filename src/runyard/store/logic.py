"""The store's algorithms, written once: each Store method as a unit of work (units.py) over
named queries, which a backend drives inside one transaction without the algorithm knowing
which backend it is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from runyard.errors import ScheduleLimitError, StaleWriteError
from runyard.models import (
    Attempt,
    AttemptEnd,
    AttemptState,
    Batch,
    Claim,
    ClaimAsk,
    Page,
    Run,
    RunFilter,
    RunState,
    Schedule,
    check_transition,
    state_event,
)
from runyard.store.channels import CANCEL_CHANNEL, QUEUE_CHANNEL, RUN_CHANNEL, SCHEDULES_CHANNEL
from runyard.store.damaged import ended_run, readable, taken
from runyard.store.record_rows import batch_from_row, readable_records, schedule_from_row
from runyard.store.rows import (
    attempt_from_row,
    attempt_to_row,
    dumps,
    page_of,
    run_from_row,
    run_to_row,
    schedule_to_row,
    shared_dumps,
)
from runyard.store.units import Notify, Query, Unit, count, execute, one, rows

log = structlog.get_logger("runyard.store")
# what a run's state column may hold: anything else was written behind the server's back
RUN_STATES = frozenset(state.value for state in RunState)

# -- building blocks --------------------------------------------------------------------------


def _add_event(run_id: str, at: float, kind: str, data: dict[str, Any]) -> Unit[None]:
    # numbered under the run's row lock (PostgreSQL) or the write lock (SQLite): no race
    yield execute("ADD_EVENT", run_id, at, kind, dumps(data), run_id)


def _state_event(run: Run, previous: RunState | None, at: float) -> Unit[None]:
    """The event of the change of state just written, where the backend does not write it
    itself (SQLite's triggers do, from the row: the same data, at its `state_at`)."""
    data = dumps(state_event(run, previous))
    yield execute("ADD_STATE_EVENT", run.id, at, "state", data, run.id)


def _add_run(run: Run) -> Unit[None]:
    """A new queued run and its first state event (the insert of a fire)."""
    yield one("INSERT_RUN", *run_to_row(run))
    yield from _state_event(run, None, run.created_at)


def _read_run(run_id: str) -> Unit[Run]:
    row = yield one("GET_RUN", run_id)
    return run_from_row(row)  # read back inside the transaction that wrote it


def _counts(found: list[tuple[Any, ...]]) -> dict[str, int]:
    return {r[0]: int(r[1]) for r in found}


# -- runs, batches, schedules (in the order of the Store contract) ----------------------------


def insert_run(run: Run) -> Unit[tuple[Run, bool]]:
    if run.idempotency_key is None:  # nothing to conflict on: no row to fetch back
        yield execute("INSERT_RUNS", *run_to_row(run))
        inserted: Any = True
    else:
        inserted = yield one("INSERT_RUN", *run_to_row(run))
    if inserted is None:  # the idempotency key was taken: the first run stands
        row = yield one("GET_RUN_BY_KEY", run.idempotency_key)
        return run_from_row(row), False
    yield from _state_event(run, None, run.created_at)
    yield Notify(QUEUE_CHANNEL)
    return run, True


def insert_batch(batch: Batch, runs: list[Run]) -> Unit[tuple[Batch, bool]]:
    """The batch and its new queued runs (keyless: a run's key taken fails the whole batch),
    each kind of row in one executemany: a sweep of 10,000 is three statements, not 20,001.
    With the batch's idempotency key taken: (the batch that took it, False), nothing stored."""
    row = (batch.id, batch.job, batch.size, batch.created_at, dumps(batch.request))
    if batch.idempotency_key is None:
        yield execute("INSERT_BATCH", *row, None)
    elif (yield one("INSERT_BATCH_KEYED", *row, batch.idempotency_key)) is None:
        return batch_from_row((yield one("GET_BATCH_BY_KEY", batch.idempotency_key))), False
    dump = shared_dumps()
    yield Query("INSERT_RUNS", [run_to_row(run, dump) for run in runs], "many")
    # a new run's first event is numbered 1, with no max() to look up; alike runs share a text
    texts: dict[tuple[Any, ...], str] = {}
    events = []
    for run in runs:
        key = (run.state, run.attempt, run.exit_code, run.reason)
        if key not in texts:
            texts[key] = dumps(state_event(run, None))
        events.append((run.id, run.created_at, texts[key]))
    yield Query("ADD_FIRST_EVENTS", events, "many")
    yield Notify(QUEUE_CHANNEL)
    return batch, True


def get_batch_by_key(key: str) -> Unit[Batch | None]:
    row = yield one("GET_BATCH_BY_KEY", key)
    return batch_from_row(row) if row else None


def get_batch(batch_id: str) -> Unit[Batch | None]:
    row = yield one("GET_BATCH", batch_id)
    return batch_from_row(row) if row else None


def list_batches(before: str | None, limit: int) -> Unit[list[Batch]]:
    found = yield Query("LIST_BATCHES", {"before": before, "limit": limit}, "all")
    return readable_records(found, batch_from_row)


def batch_counts(batch_id: str) -> Unit[dict[str, int]]:
    return _counts((yield rows("BATCH_COUNTS", batch_id)))


def batch_run_ids(batch_id: str, state: RunState) -> Unit[list[str]]:
    found = yield rows("BATCH_RUNS_IN", batch_id, state.value)
    return [r[0] for r in found]


def save_schedule(schedule: Schedule, run: Run | None, at_most: int | None) -> Unit[None]:
    if run is not None:  # a fire: the run and the schedule's new state, or neither
        yield from _add_run(run)
        yield Notify(QUEUE_CHANNEL)
    row = schedule_to_row(schedule)
    if schedule.version == 0:  # never stored
        if at_most is not None:
            yield execute("LOCK_SCHEDULE_COUNT")
            (stored,) = yield one("COUNT_SCHEDULES")
            if int(stored) >= at_most:
                raise ScheduleLimitError(at_most)
        yield execute("INSERT_SCHEDULE", *row)
    elif int((yield count("UPDATE_SCHEDULE", *row[1:], schedule.id, schedule.version))) == 0:
        # changed or deleted elsewhere since this copy was read: nothing of it (nor its run)
        raise StaleWriteError(f"schedule {schedule.id} changed meanwhile; read it again")
    yield Notify(SCHEDULES_CHANNEL, schedule.id)


def list_schedules() -> Unit[list[Schedule]]:
    found = yield rows("LIST_SCHEDULES")
    return readable_records(found, schedule_from_row)  # one damaged, the others fire on


def delete_schedule(schedule_id: str) -> Unit[bool]:
    yield Notify(SCHEDULES_CHANNEL, schedule_id)
    return int((yield count("DELETE_SCHEDULE", schedule_id))) > 0


def get_run(run_id: str) -> Unit[Run | None]:
    row = yield one("GET_RUN", run_id)
    return run_from_row(row) if row else None


def get_run_by_idempotency_key(key: str) -> Unit[Run | None]:
    row = yield one("GET_RUN_BY_KEY", key)
    return run_from_row(row) if row else None


def list_runs(flt: RunFilter) -> Unit[Page]:
    found = yield Query("LIST_RUNS", (flt,), "all")  # one row past the page: is there more?
    page = page_of(found[: flt.limit])  # a part of what was found: more if it is not all
    more = len(found) > len(page)
    # a damaged row is left out, the cursor past it all the same
    return Page(runs=readable(page), next_cursor=page[-1][0] if more else None)


def count_runs(state: RunState, job: str | None) -> Unit[int]:
    if job is None:
        row = yield one("COUNT_RUNS", state.value)
    else:
        row = yield one("COUNT_RUNS_OF_JOB", state.value, job)
    return int(row[0]) if row else 0


def counts_by_job(state: RunState) -> Unit[dict[str, int]]:
    return _counts((yield rows("COUNT_BY_JOB", state.value)))


# -- dispatch ---------------------------------------------------------------------------------


def claim(
    limit: int, job_slots: Mapping[str, int], now: float, host: str, token: str | None
) -> Unit[list[Claim]]:
    if not job_slots:  # no job's limit in play: the runs taken in one statement
        return (yield from _claim_next(limit, now, host, token))
    claims: list[Claim] = []
    slots = dict(job_slots)
    full = {job for job, n in slots.items() if n <= 0}
    # Each query skips jobs with no free slot; a job that fills up during the claim ends the
    # page, so the queue is never scanned past what can be taken.
    while len(claims) < limit:
        found = yield rows("CLAIM_CANDIDATES", now, dumps(sorted(full)), limit - len(claims))
        if not found:
            break
        for run_id, job in found:
            if job in full:
                break
            runs = yield from taken([(yield one("CLAIM_RUN", now, now, run_id))], now)
            if not runs:  # damaged, and failed: no slot taken
                continue
            if job in slots:
                slots[job] -= 1
                if slots[job] <= 0:
                    full.add(job)
            claims.append((yield from _attempt_of(runs[0], now, host, token)))
    return claims


def _claim_next(limit: int, now: float, host: str, token: str | None) -> Unit[list[Claim]]:
    claims: list[Claim] = []
    while len(claims) < limit:
        found = yield Query("CLAIM_NEXT", {"now": now, "limit": limit - len(claims)}, "all")
        runs = yield from taken(found, now)
        for run in sorted(runs, key=lambda run: (-run.priority, run.id)):
            claims.append((yield from _attempt_of(run, now, host, token)))
        if len(runs) == len(found):  # none damaged (failed instead): the claim is whole
            break
    return claims


def _attempt_of(run: Run, now: float, host: str, token: str | None) -> Unit[Claim]:
    """The attempt of a run just claimed, and its claim's event."""
    run_id = run.id
    attempt = Attempt(
        run_id=run_id, number=run.attempt, state=AttemptState.STARTING, created_at=now, host=host,
        lease_token=token,
    )  # fmt: skip
    yield execute("INSERT_ATTEMPT", *attempt_to_row(attempt))
    # `now` was read before this transaction, which may take a run inserted after it
    yield from _state_event(run, RunState.QUEUED, max(now, run.created_at))
    return Claim(run=run, attempt=attempt)


def next_due(now: float) -> Unit[float | None]:
    row = yield one("NEXT_DUE", now)
    return row[0] if row else None


def attempts_started(started: list[tuple[str, int, int, int, float, float]]) -> Unit[None]:
    found = [(pid, pgid, st, at, run_id, n) for run_id, n, pid, pgid, st, at in started]
    yield Query("ATTEMPT_STARTED", found, "many")


def end_attempt(
    run_id: str, number: int, end: AttemptEnd, token: str | None, by: str | None = None
) -> Unit[Run | None]:
    """`by`: the server that records the end, when it is not the attempt's own (a reaper)."""
    yield execute("HOLD_RUN", run_id)
    # (host, the run's state before this end): one statement, one step fewer per end
    ended = yield one(
        "END_ATTEMPT", end.attempt_state.value, end.ended_at, end.exit_code, end.signal,
        end.outcome, end.peak_rss_kb, end.pid, end.started_at, run_id, number, token, token,
        run_id, run_id,
    )  # fmt: skip
    if ended is None or ended[1] is None:  # ended already, or no longer held under `token`
        return None
    # read under the run's lock: a cancel accepted since the caller read the run still holds
    end = end.honouring_cancel(bool(ended[2]))
    if ended[1] not in RUN_STATES:  # its state damaged while it ran: the end fails it
        stored, why = ended[1], f"its stored state {str(ended[1])[:40]!r} is no run's state"
        log.warning("damaged_run_failed", run_id=run_id[:80], column="state", error=why)
        end = end.damaged(why)
    else:
        stored = RunState.RUNNING.value
        check_transition(run_id, RunState(ended[1]), end.run_state)
    finished = None if end.run_state is RunState.QUEUED else end.ended_at
    row = yield one(
        "END_RUN", end.run_state.value, end.exit_code, end.reason, finished, end.not_before,
        end.ended_at, run_id, stored,
    )  # fmt: skip
    if row is None:  # not running (fenced above, so never): no change, no event
        return (yield from _read_run(run_id))
    run = ended_run(row)
    if run is None:  # its row damaged while it ran: the end is written, nobody is told
        return None
    # the run's attempt is the one ending (a claim numbers it; a stale one is fenced above)
    yield from _state_event(run, RunState.RUNNING, end.ended_at)
    # Names the server that wrote the change: each server skips its own changes, so an end
    # another server wrote of this server's attempt (it reaped it) must not name this one.
    yield Notify(RUN_CHANNEL, f"{run_id} {run.state.value} {by or ended[0]}")
    if run.state is RunState.QUEUED:  # a retry: any server may take it
        yield Notify(QUEUE_CHANNEL)
    return run


def end_and_claim(
    run_id: str, number: int, end: AttemptEnd, token: str | None, ask: ClaimAsk
) -> Unit[tuple[Run | None, list[Claim]]]:
    """An attempt's end, then the claim of what takes its slot, in one transaction: no claim
    of its own (a transaction, a loop turn) for the slot an end frees. Nothing is claimed when
    the end changed nothing (already recorded, or fenced)."""
    run = yield from end_attempt(run_id, number, end, token, ask.host)
    if run is None:
        return None, []
    return run, (yield from claim(ask.limit, ask.room, ask.now, ask.host, ask.token))


def cancel_queued(run_id: str, at: float, reason: str) -> Unit[Run | None]:
    row = yield one("LOCK_RUN", run_id)
    if row is None or row[0] != RunState.QUEUED.value:
        return None
    check_transition(run_id, RunState.QUEUED, RunState.CANCELLED)
    row = yield one(
        "END_RUN", RunState.CANCELLED.value, None, reason, at, None, at, run_id,
        RunState.QUEUED.value,
    )  # fmt: skip
    if row is None:  # changed meanwhile (never: the state was read under the lock above)
        return None
    run = run_from_row(row)
    yield from _state_event(run, RunState.QUEUED, at)
    yield Notify(RUN_CHANNEL, f"{run_id} {run.state.value} -")
    return run


def cancel_queued_of_batch(batch_id: str, at: float, reason: str) -> Unit[list[Run]]:
    """Every queued run of the batch cancelled, as `cancel_queued` cancels one, by one
    statement: no claim comes between two of them."""
    found = yield rows(
        "CANCEL_QUEUED_OF_BATCH", RunState.CANCELLED.value, reason, at, at, batch_id,
        RunState.QUEUED.value,
    )  # fmt: skip
    cancelled = readable(found)
    for run in cancelled:
        yield from _state_event(run, RunState.QUEUED, at)
        yield Notify(RUN_CHANNEL, f"{run.id} {run.state.value} -")
    return cancelled


def request_cancel(run_id: str) -> Unit[Run | None]:
    if int((yield count("SET_CANCEL_REQUESTED", run_id))) == 0:
        return None
    run = yield from _read_run(run_id)
    # the server running the attempt stops it: it may not be the one asked
    found = yield rows("GET_ATTEMPTS", run_id)
    if found:
        attempt = attempt_from_row(found[-1])
        yield Notify(CANCEL_CHANNEL, f"{run_id} {attempt.number} {attempt.host or '-'}")
    return run


def removable(
    listing: str, bound: float, limit: int, after: tuple[float, str] | None
) -> Unit[list[tuple[str, float]]]:
    """A page of retention's `listing` (EXPIRED, UNTIMED_BEFORE): (id, key) up to `bound`,
    after the run `after` names by its (key, id)."""
    if after is None:
        found = yield rows(listing, bound, limit)
    else:
        found = yield rows(f"{listing}_AFTER", bound, after[0], after[0], after[1], limit)
    return [(r[0], r[1]) for r in found]


def delete_run(run_id: str) -> Unit[bool]:
    return int((yield count("DELETE_RUN", run_id))) > 0


def get_attempts(run_id: str) -> Unit[list[Attempt]]:
    found = yield rows("GET_ATTEMPTS", run_id)
    return [attempt_from_row(r) for r in found]


def active_attempts(host: str | None) -> Unit[list[Attempt]]:
    found = yield rows("ACTIVE_ATTEMPTS", host, host)
    return [attempt_from_row(r) for r in found]


# -- progress and events -----------------------------------------------------------------------


def set_progress(run_id: str, progress: dict[str, Any]) -> Unit[None]:
    yield execute("SET_PROGRESS", dumps(progress), run_id)
