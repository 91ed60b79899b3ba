"""A store row an older version poisoned (SQLite keeps whatever was written) still reads."""

from __future__ import annotations

import json

from runyard.models import AttemptState, RunState
from runyard.schemas import RunView
from runyard.store.rows import attempt_from_row, run_from_row


def test_a_poisoned_run_row_reads_back_and_serialises() -> None:
    row = (
        "01JROW", "j", "{}", "failed", 0, "{}", None, None, None, None, 1_700_000_000.0,
        "soon", "yesterday", 1, "0", "exit code 0", None, float("nan"), 0, "{}", 0,
    )  # fmt: skip
    attempt = ("01JROW", 1, "exited", "h", 1_700_000_000.0, "x", 7, float("inf"), "soon",
               "yesterday", "0", "x", "exit", True, None)  # fmt: skip
    run = run_from_row(row)
    assert (run.state, run.started_at, run.finished_at, run.not_before) == (
        RunState.FAILED, None, None, None,
    )  # fmt: skip
    assert run.exit_code is None
    a = attempt_from_row(attempt)
    assert a.state is AttemptState.EXITED
    assert (a.pid, a.pgid, a.proc_start_time, a.started_at, a.ended_at) == (
        None,
        7,
        None,
        None,
        None,
    )
    assert (a.exit_code, a.signal, a.peak_rss_kb) == (None, None, None)
    view = RunView.of(run, [a])
    assert json.loads(view.model_dump_json())["id"] == "01JROW"


def test_good_values_are_kept_as_they_are() -> None:
    row = ("01JROW", "j", "{}", "succeeded", 0, "{}", None, None, None, None, 1.0, 2, 3.5, 1,
           0, None, None, None, 0, "{}", 0)  # fmt: skip
    run = run_from_row(row)
    assert (run.started_at, run.finished_at, run.exit_code) == (2.0, 3.5, 0)
