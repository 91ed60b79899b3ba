"""How an attempt's end becomes a run state, with retries and backoff."""

from __future__ import annotations

import random

import pytest

from runyard.execution.protocol import ExitRecord
from runyard.jobs.spec import Backoff, JobSpec
from runyard.models import (
    TRANSITIONS,
    IllegalTransitionError,
    Run,
    RunState,
    check_transition,
)
from runyard.services.outcomes import backoff_delay, decide, lost


def spec(**kw: object) -> JobSpec:
    return JobSpec.model_validate({"name": "j", "command": ["x"], **kw})


def run(attempt: int = 1, cancel: bool = False) -> Run:
    return Run(id="r", job="j", params={}, state=RunState.RUNNING, priority=0, created_at=0,
               attempt=attempt, cancel_requested=cancel)  # fmt: skip


def record(
    code: int | None = 0, sig: int | None = None, killed_by: str | None = None
) -> ExitRecord:
    return ExitRecord(key="r.1", pid=1, exit_code=code, signal=sig, killed_by=killed_by,
                      started_at=1.0, ended_at=2.0)  # fmt: skip


RNG = random.Random(0)


def test_plain_outcomes() -> None:
    assert decide(record(0), run(), spec(), RNG).run_state is RunState.SUCCEEDED
    failed = decide(record(3), run(), spec(), RNG)
    assert failed.run_state is RunState.FAILED
    assert failed.exit_code == 3
    killed = decide(record(None, 9), run(), spec(), RNG)
    assert killed.reason == "killed by SIGKILL"
    assert decide(record(None, 15, "cancel"), run(), spec(), RNG).run_state is RunState.CANCELLED
    assert decide(record(0), run(cancel=True), spec(), RNG).run_state is RunState.CANCELLED
    timed = decide(record(None, 15, "timeout"), run(), spec(timeout_s=5), RNG)
    assert timed.run_state is RunState.TIMED_OUT
    assert "timed out after 5s" in timed.reason


def test_a_program_stopped_as_its_spawn_was_given_up_is_no_fault_of_its_run() -> None:
    """Its end recorded before the launch's own `not started` (late_spawns.py): the run goes
    back to the queue, its retry budget untouched, even with no retries at all."""
    end = decide(record(None, 15, "given_up"), run(), spec(max_attempts=1), RNG)
    assert end.run_state is RunState.QUEUED
    assert end.outcome == "not_started"
    assert "given it up" in end.reason


def test_retry_on_listed_exit_code_until_attempts_run_out() -> None:
    s = spec(max_attempts=3, retry_on=[3, "timeout"], backoff={"base_s": 2, "jitter": 0})
    first = decide(record(3), run(1), s, RNG)
    assert first.run_state is RunState.QUEUED
    assert first.not_before == 2.0 + 2
    second = decide(record(3), run(2), s, RNG)
    assert second.not_before == 2.0 + 4
    assert decide(record(3), run(3), s, RNG).run_state is RunState.FAILED
    assert decide(record(4), run(1), s, RNG).run_state is RunState.FAILED  # not listed
    assert decide(record(None, 15, "timeout"), run(1), spec(max_attempts=2, retry_on=["timeout"],
                  timeout_s=1), RNG).run_state is RunState.QUEUED  # fmt: skip


def test_lost_retries_by_default_policy() -> None:
    assert lost(run(1), spec(max_attempts=2), 5.0, RNG, "x").run_state is RunState.QUEUED
    end = lost(run(1), spec(), 5.0, RNG, "gone")
    assert end.run_state is RunState.FAILED
    assert end.reason == "lost: gone"


@pytest.mark.parametrize("attempt", [1, 2, 5, 30])
def test_backoff_is_capped_and_jittered(attempt: int) -> None:
    policy = Backoff(base_s=1, factor=2, max_s=10, jitter=0.5)
    delays = [backoff_delay(policy, attempt, random.Random(i)) for i in range(50)]
    nominal = min(10, 2 ** (attempt - 1))
    assert all(nominal * 0.5 <= d <= nominal * 1.5 for d in delays)
    assert len(set(delays)) > 1


def test_terminal_states_never_change() -> None:
    for state in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED, RunState.TIMED_OUT):
        assert TRANSITIONS[state] == frozenset()
        with pytest.raises(IllegalTransitionError):
            check_transition("r", state, RunState.QUEUED)
    check_transition("r", RunState.RUNNING, RunState.QUEUED)  # a retry is legal


def test_a_timeout_record_of_a_job_without_timeout_is_still_decided() -> None:
    timed = decide(record(None, 15, "timeout"), run(), spec(), RNG)
    assert (timed.run_state, timed.reason) == (RunState.TIMED_OUT, "timed out (killed by SIGTERM)")
