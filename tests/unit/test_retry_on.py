"""A job's `retry_on`, checked strictly: exit codes 1..255, "lost", "timeout" and the names of
the signals a program dies of. Lax coercion had taken `true`, "3", 1.0 as exit codes and 0, -1,
256 as ones no end matches, and no item could name a death by signal."""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest

from runyard.execution.protocol import ExitRecord
from runyard.jobs import retry_on
from runyard.jobs.spec import JobSpec, LoadError, load_job
from runyard.models import Run, RunState
from runyard.services.outcomes import decide

ALLOWED = 'allowed: exit codes 1 to 255, "lost", "timeout", or the name of a signal'


def job_file(tmp_path: Path, retry_on: str) -> Path:
    path = tmp_path / "j.toml"
    path.write_text(f'command = ["x"]\nmax_attempts = 2\nretry_on = {retry_on}\n')
    return path


@pytest.mark.parametrize(
    ("item", "why"),
    [
        ("true", "a boolean"),
        ('"3"', "without quotes"),
        ("1.0", "not an integer"),
        ("0", "0 is success"),
        ("-1", "exit codes are 1 to 255"),
        ("-9", "exit codes are 1 to 255"),
        ("256", "exit codes are 1 to 255"),
        ('"sigkill"', 'write "SIGKILL"'),
        ('"KILL"', 'write "SIGKILL"'),
        ('"SIGIOT"', 'write "SIGABRT"'),  # an alias: the exit record names SIGABRT
        ('"SIGSTOP"', "no program dies of SIGSTOP"),
        ('"SIGCHLD"', "no program dies of SIGCHLD"),
        ('"Timeout"', 'write "timeout"'),
        ('"signal 9"', "no such word or signal"),
        ("{ a = 1 }", "neither an exit code nor a name"),
    ],
)
def test_an_item_no_end_can_match_is_the_job_files_load_error(
    tmp_path: Path, item: str, why: str
) -> None:
    with pytest.raises(LoadError) as info:
        load_job(job_file(tmp_path, f'["lost", {item}]'))
    message = info.value.message
    shown = '{"a": 1}' if item.startswith("{") else item  # as JSON writes it
    assert message.startswith(f"retry_on: {shown} ("), message
    assert why in message and ALLOWED in message, message


def test_every_bad_item_is_named_in_one_error(tmp_path: Path) -> None:
    with pytest.raises(LoadError) as info:
        load_job(job_file(tmp_path, '[true, 1, "3", "SIGKILL", 256]'))
    message = info.value.message
    assert [part.split(" (")[0] for part in message.split(" — ")[0].split("; ")] == [
        "retry_on: true",
        '"3"',
        "256",
    ], message


def test_exit_codes_words_and_signal_names_load_as_written(tmp_path: Path) -> None:
    """Duplicates are harmless and kept; 137 stays the exit code 137 (never SIGKILL)."""
    items = '[1, 137, 255, "lost", "timeout", "SIGKILL", "SIGSEGV", "SIGXCPU", 1, "SIGKILL"]'
    job = load_job(job_file(tmp_path, items))
    assert job.spec.retry_on == [1, 137, 255, "lost", "timeout", "SIGKILL", "SIGSEGV", "SIGXCPU",
                                 1, "SIGKILL"]  # fmt: skip
    assert job.snapshot["retry_on"] == job.spec.retry_on


@pytest.mark.parametrize(
    "sig", [s for s in signal.Signals if s.name not in {
        "SIGCHLD", "SIGCONT", "SIGURG", "SIGWINCH", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU"}],
    ids=lambda s: s.name,
)  # fmt: skip
def test_each_signal_a_program_can_die_of_is_named_as_its_exit_record_names_it(
    tmp_path: Path, sig: signal.Signals
) -> None:
    job = load_job(job_file(tmp_path, f'["{sig.name}"]'))
    end = decide(record(None, int(sig)), run(1), job.spec, random.Random(0))
    assert end.run_state is RunState.QUEUED, end.reason


def test_a_spec_stored_with_a_run_is_read_back_as_an_older_load_took_it() -> None:
    """A run queued by an older version keeps the spec it was given: refused now, it could
    neither be launched nor end."""
    stored = {"name": "j", "command": ["x"], "retry_on": [0, 256, -1, 3, "lost"]}
    assert JobSpec.from_stored(stored).retry_on == [0, 256, -1, 3, "lost"]
    with pytest.raises(ValueError, match="exit codes are 1 to 255"):
        JobSpec.model_validate(stored)


def spec(retry_on: list[int | str]) -> JobSpec:
    data = {"name": "j", "command": ["x"], "max_attempts": 2, "retry_on": retry_on}
    return JobSpec.model_validate({**data, "timeout_s": 5, "backoff": {"jitter": 0}})


def run(attempt: int) -> Run:
    return Run(id="r", job="j", params={}, state=RunState.RUNNING, priority=0, created_at=0,
               attempt=attempt)  # fmt: skip


def record(code: int | None, sig: int | None = None, killed_by: str | None = None) -> ExitRecord:
    return ExitRecord(key="r.1", pid=1, exit_code=code, signal=sig, killed_by=killed_by,
                      started_at=1.0, ended_at=2.0)  # fmt: skip


def test_a_death_by_a_named_signal_is_retried_while_attempts_remain() -> None:
    rng = random.Random(0)
    first = decide(record(None, 9), run(1), spec(["SIGKILL"]), rng)
    assert first.run_state is RunState.QUEUED
    assert first.reason.startswith("killed by SIGKILL; retrying in 1.0s (attempt 2 of 2)")
    assert decide(record(None, 9), run(2), spec(["SIGKILL"]), rng).run_state is RunState.FAILED
    assert decide(record(None, 11), run(1), spec(["SIGKILL"]), rng).run_state is RunState.FAILED


def test_a_signal_is_never_its_128_plus_n_exit_code_nor_the_other_way_round() -> None:
    rng = random.Random(0)
    assert decide(record(137), run(1), spec(["SIGKILL"]), rng).run_state is RunState.FAILED
    assert decide(record(None, 9), run(1), spec([137]), rng).run_state is RunState.FAILED
    assert decide(record(137), run(1), spec([137]), rng).run_state is RunState.QUEUED


def test_runyards_own_kills_never_answer_to_a_signal_name() -> None:
    """A cancel is never retried; a timeout answers to "timeout" alone; a stop for a reason
    this version does not know is not the program's death."""
    rng = random.Random(0)
    named = spec(["SIGTERM", "SIGKILL"])
    assert decide(record(None, 15, "cancel"), run(1), named, rng).run_state is RunState.CANCELLED
    assert decide(record(None, 9, "timeout"), run(1), named, rng).run_state is RunState.TIMED_OUT
    assert decide(record(None, 9, "later"), run(1), named, rng).run_state is RunState.FAILED
    timed = decide(record(None, 9, "timeout"), run(1), spec(["timeout"]), rng)
    assert timed.run_state is RunState.QUEUED


def test_a_real_time_signal_is_named_as_kill_l_names_it() -> None:
    """A re-probe: "SIGRTMIN" loaded and "SIGRTMIN+1" was refused, so a death by a real-time
    signal past the first could not be retried."""
    first = signal.SIGRTMIN + 1
    assert retry_on.signal_trigger(first) == "SIGRTMIN+1"
    assert retry_on.check(["SIGRTMIN+1", "SIGRTMIN", "SIGRTMAX"]) == [
        "SIGRTMIN+1", "SIGRTMIN", "SIGRTMAX",
    ]  # fmt: skip
    beyond = f"SIGRTMIN+{signal.SIGRTMAX - signal.SIGRTMIN}"  # that is SIGRTMAX's number
    with pytest.raises(ValueError, match="no such word or signal"):
        retry_on.check([beyond])
