"""Every numeric setting is bounded by the model (config.py): NaN never, inf only where it
means "never" or "no bound", integers within what the system holds. A value outside is a
SettingsError line that names it as it was given, never a failure in what first uses it."""

from __future__ import annotations

import math
import sqlite3
import typing

import pytest

from runyard.config import INT64_MAX, MAX_CAPACITY, Settings, SettingsError

# where inf is taken as "never" / "no bound" (docs/operations.md lists the same)
NEVER = {
    "header_timeout_s", "jobs_refresh_s", "drain_timeout_s", "supervisor_timeout_s",
    "retention_s", "retention_interval_s", "upload_ttl_s", "max_wait_s", "heartbeat_s",
    "stream_send_timeout_s", "lease_s", "slurm_submit_per_s",
}  # fmt: skip


def _fields_of(kind: type) -> list[str]:
    """The settings whose value is a `kind` (or a `kind` or None)."""
    found = []
    for name, field in Settings.model_fields.items():
        args = typing.get_args(field.annotation) or (field.annotation,)
        # a bounded type (config.Count, OrNever) inside an Optional is still Annotated
        bare = [typing.get_args(a)[0] if typing.get_origin(a) is typing.Annotated else a
                for a in args]  # fmt: skip
        if kind in bare:
            found.append(name)
    return found


FLOATS = _fields_of(float)
INTS = _fields_of(int)


def _refusal(environ: dict[str, str], **overrides: object) -> list[str]:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(environ, flags={"capacity": "--capacity"}, **overrides)
    return refused.value.problems


def test_the_kinds_are_found() -> None:
    assert {"shutdown_timeout_s", "lease_s", "retention_s"} <= set(FLOATS)
    assert {"capacity", "max_queue", "db_busy_timeout_ms"} <= set(INTS)
    assert set(NEVER) <= set(FLOATS)


@pytest.mark.parametrize("name", FLOATS)
def test_nan_is_refused_by_every_float_setting(name: str) -> None:
    key = f"RUNYARD_{name.upper()}"
    problems = _refusal({key: "nan"})
    assert len(problems) == 1
    assert problems[0].startswith(f"{key}=nan: must be a ")


@pytest.mark.parametrize("name", FLOATS)
def test_inf_is_taken_only_where_it_means_never(name: str) -> None:
    key = f"RUNYARD_{name.upper()}"
    if name in NEVER:
        assert math.isinf(getattr(Settings.from_env({key: "inf"}), name))
    else:  # finite, or bounded above: either way said, naming it
        (problem,) = _refusal({key: "inf"})
        assert problem in (f"{key}=inf: must be a finite number", *[
            f"{key}=inf: must be at most {bound}" for bound in _upper_bounds(name)
        ])  # fmt: skip


def _upper_bounds(name: str) -> list[object]:
    return [m.le for m in Settings.model_fields[name].metadata if hasattr(m, "le")]


@pytest.mark.parametrize("name", INTS)
def test_every_integer_setting_is_bounded_by_what_the_system_holds(name: str) -> None:
    key = f"RUNYARD_{name.upper()}"
    (problem,) = _refusal({key: str(2**63)})
    assert problem.startswith(f"{key}={2**63}: must be at most ")
    bound = int(problem.rsplit(" ", 1)[1])
    assert bound <= INT64_MAX


def test_capacity_is_capped_and_named_by_its_flag() -> None:
    assert _refusal({}, capacity=MAX_CAPACITY + 1) == [
        f"--capacity {MAX_CAPACITY + 1}: must be at most {MAX_CAPACITY}"
    ]
    assert Settings.from_env({}, capacity=MAX_CAPACITY).capacity == MAX_CAPACITY
    # the flag wins over the variable, and is what the error names
    assert _refusal({"RUNYARD_CAPACITY": "4"}, capacity=0) == ["--capacity 0: must be at least 1"]


def test_the_busy_timeout_fits_sqlites_int() -> None:
    """SQLite reads busy_timeout as a C int: one past it was taken silently as 0 (no wait)."""
    with sqlite3.connect(":memory:") as conn:
        conn.execute(f"PRAGMA busy_timeout = {2**31}")
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (0,)
    assert _refusal({"RUNYARD_DB_BUSY_TIMEOUT_MS": str(2**31)}) == [
        f"RUNYARD_DB_BUSY_TIMEOUT_MS={2**31}: must be at most {2**31 - 1}"
    ]


def test_each_problem_is_one_line_naming_what_was_written() -> None:
    problems = _refusal({
        "RUNYARD_PORT": "", "RUNYARD_FSYNC": "maybe", "RUNYARD_LOG_FORMAT": "xml",
        "RUNYARD_SCHEDULE_MIN_INTERVAL_S": "inf", "RUNYARD_MAX_UPLOAD_MB": "1e3",
    })  # fmt: skip
    assert problems == [
        "RUNYARD_PORT='': must be a whole number",
        "RUNYARD_FSYNC=maybe: must be true or false (or 1/0, yes/no, on/off)",
        "RUNYARD_MAX_UPLOAD_MB=1e3: must be a whole number",
        "RUNYARD_SCHEDULE_MIN_INTERVAL_S=inf: must be a finite number",
        "RUNYARD_LOG_FORMAT=xml: must be 'auto', 'json' or 'console'",
    ]
