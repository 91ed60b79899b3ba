"""A store row an older version poisoned (SQLite keeps whatever was written) still reads."""

from __future__ import annotations

import json
import math

import pytest

from runyard.models import AttemptState, RunState
from runyard.schemas import RunView
from runyard.store.rows import attempt_from_row, dumps, loads, run_from_row


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


@pytest.mark.parametrize(
    "value",
    [{"n": 2**70}, {"n": -(2**80), "nested": [2**65]}, {1: "a key that is no string"}],
)
def test_what_orjson_refuses_is_stored_and_read_back_by_json(value: object) -> None:
    stored = dumps(value)
    back = loads(stored)
    expected = {str(k): v for k, v in value.items()} if isinstance(value, dict) else value
    assert back == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [('{"x": NaN}', "nan"), ('{"s": "\\ud800"}', "\ud800"), ('{"n": 1' + "0" * 30 + "}", None)],
)
def test_what_earlier_versions_wrote_reads_back(text: str, expected: str | None) -> None:
    value = next(iter(loads(text).values()))
    if expected == "nan":
        assert isinstance(value, float) and math.isnan(value)
    elif expected is None:
        assert value == 10**30
    else:
        assert value == expected


def test_the_runs_of_one_job_read_back_one_spec_parsed_once() -> None:
    """Every claim and every end reads its run's spec back: each distinct text is parsed
    once, and its runs share the dict (a spec read back is never changed in place)."""
    spec = {"command": ["true"], "big": 2**70, "retry_on": ["lost"]}  # 2**70: json's to read

    def row(run_id: str, text: str) -> tuple[object, ...]:
        return (run_id, "j", "{}", "queued", 0, "{}", None, None, None, None, 1.0, None,
                None, 0, None, None, None, None, 0, text, 0)  # fmt: skip

    first, second = (run_from_row(row(i, dumps(spec))) for i in ("01JA", "01JB"))
    assert first.spec == spec
    assert second.spec is first.spec
    other = run_from_row(row("01JC", dumps({**spec, "big": 1})))
    assert other.spec["big"] == 1
    assert first.spec["big"] == 2**70
