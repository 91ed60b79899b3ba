"""Rows that cannot be read back as the runs they record (rows.run_from_row says which column):
each is that run's failure alone.

SQLite keeps whatever a column is set to, and a row rewritten behind the server's back (or
damaged inside a page that still parses) was read by every listing holding it and by the
queue's claim: one such row made every page of `GET /v1/runs` that held it a 500, and, queued,
failed every claim, whose transaction was undone and tried again twice a second for ever, the
runs behind it never started. A listing now leaves it out, named in the log; a claim that
takes it fails it in its own transaction (its reason names the column) and takes the next."""

from __future__ import annotations

from typing import Any

import structlog

from runyard.errors import RecordDamagedError
from runyard.models import Run, RunState
from runyard.store.channels import RUN_CHANNEL
from runyard.store.rows import dumps, run_from_row
from runyard.store.units import Notify, Unit, execute, one

log = structlog.get_logger("runyard.store")


def readable(found: list[tuple[Any, ...]]) -> list[Run]:
    """The runs of a listing's rows, each damaged one left out and named."""
    return [run for row in found if (run := _decoded(row, "damaged_run_skipped")) is not None]


def ended_run(row: tuple[Any, ...]) -> Run | None:
    """The run an end just wrote, or None if its row is damaged (the end stands: its exit
    is not lost to a row that fails to read back, nor tried again for ever)."""
    return _decoded(row, "damaged_run_ended")


def _decoded(row: tuple[Any, ...], event: str) -> Run | None:
    try:
        return run_from_row(row)
    except RecordDamagedError as exc:
        log.warning(event, run_id=exc.run_id, column=exc.column, error=exc.detail)
        return None


def taken(found: list[tuple[Any, ...]], now: float) -> Unit[list[Run]]:
    """The runs a claim took (each now `running`), each damaged one failed instead."""
    runs = []
    for row in found:
        try:
            runs.append(run_from_row(row))
        except RecordDamagedError as exc:
            yield from _fail(row, exc, now)
    return runs


def _fail(row: tuple[Any, ...], exc: RecordDamagedError, now: float) -> Unit[None]:
    run_id = row[0]
    log.warning("damaged_run_failed", run_id=exc.run_id, column=exc.column, error=exc.detail)
    reason = f"{exc.detail}: it cannot be run"
    # the claim moved it to running; the row is read back raw (never decoded again)
    yield one("END_RUN", RunState.FAILED.value, None, reason, now, None, now, run_id,
              RunState.RUNNING.value)  # fmt: skip
    data = {"from": RunState.QUEUED.value, "to": RunState.FAILED.value,
            "attempt": row[13] if type(row[13]) is int else 0, "exit_code": None,
            "reason": reason}  # fmt: skip
    # where the backend does not write the event itself (SQLite's triggers do)
    yield execute("ADD_STATE_EVENT", run_id, now, "state", dumps(data), run_id)
    yield Notify(RUN_CHANNEL, f"{run_id} {RunState.FAILED.value} -")
