"""A short task's failure is logged under its group: a bad day's (a full disk, the store away)
as one line naming the cause, anything else with its traceback."""

from __future__ import annotations

import asyncio

import structlog

from runyard.background import TaskGroup
from runyard.errors import StorageFullError


def test_a_bad_days_failure_is_a_line_and_a_bugs_a_traceback() -> None:
    async def full() -> None:
        raise StorageFullError("database or disk is full")

    async def bug() -> None:
        raise KeyError("x")

    async def scenario() -> None:
        group = TaskGroup("retire")
        group.start(full())
        group.start(bug())
        await group.wait()

    with structlog.testing.capture_logs() as logs:
        asyncio.run(scenario())
    said = {e["log_level"]: e for e in logs if e["event"] == "task_failed"}
    assert said["warning"]["error"] == "database or disk is full"
    assert "exc_info" not in said["warning"]
    assert isinstance(said["error"]["exc_info"], KeyError)
