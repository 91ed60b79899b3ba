"""The executors held to the Executor protocol by tests/integration/test_executor_contract.py.

To add one: write a factory with the `ExecutorFactory` signature (an async context manager
yielding a `Subject`, cleaning up after itself) and append it to EXECUTORS.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from runyard.clock import SystemClock
from runyard.execution.base import Executor
from runyard.execution.executor import LocalExecutor
from tests.fakes import FakeBackend, FakeExecutor, acted_command
from tests.support import kill_everything


@dataclass(frozen=True)
class Program:
    """What an attempt's program does, said so that any executor under test can act it out
    (one that runs no real process reads it back from the command `Subject.command` made)."""

    output: str = ""  # what it writes to its log (stdout and stderr)
    exit_code: int = 0
    until_signalled: bool = False  # runs until stopped; SIGTERM ends it at once
    missing: bool = False  # its command does not exist


@dataclass(frozen=True)
class Subject:
    """An executor under test, not started, and what the suite needs around it."""

    executor: Executor
    command: Callable[[Program], list[str]]  # the Launch.command that runs `program`
    # Another executor on the same backend and data directory, as a restarted server builds
    # (not started): it must adopt what the first left running.
    reopen: Callable[[], Executor]


ExecutorFactory = Callable[[Path], AbstractAsyncContextManager[Subject]]


def shell_command(program: Program) -> list[str]:
    """`program` as a real argv (no `{` anywhere: commands are templates)."""
    if program.missing:
        return ["/nonexistent/runyard-contract-program"]
    if program.until_signalled:
        return ["sh", "-c", 'printf "%s" "$0"; exec sleep 30', program.output]
    return ["sh", "-c", 'printf "%s" "$0"; exit "$1"', program.output, str(program.exit_code)]


@contextlib.asynccontextmanager
async def local_executor(tmp_path: Path) -> AsyncIterator[Subject]:
    """The supervisor: real processes, a real supervisor per data directory."""
    data_dir, jobs_dir = tmp_path / "data", tmp_path / "jobs"
    data_dir.mkdir()
    jobs_dir.mkdir()
    try:
        yield Subject(
            executor=LocalExecutor(data_dir, jobs_dir),
            command=shell_command,
            reopen=lambda: LocalExecutor(data_dir, jobs_dir),
        )
    finally:
        kill_everything(data_dir)


def acted(program: Program) -> list[str]:
    return acted_command(
        program.output,
        program.exit_code,
        until_signalled=program.until_signalled,
        missing=program.missing,
    )


@contextlib.asynccontextmanager
async def fake_executor(tmp_path: Path) -> AsyncIterator[Subject]:
    """tests/fakes.py's, which the in-process layer runs on: no process, programs acted out."""
    data_dir, jobs_dir = tmp_path / "data", tmp_path / "jobs"
    data_dir.mkdir()
    jobs_dir.mkdir()
    backend, clock = FakeBackend(), SystemClock()
    yield Subject(
        executor=FakeExecutor(data_dir, clock, backend=backend, jobs_dir=jobs_dir),
        command=acted,
        reopen=lambda: FakeExecutor(data_dir, clock, backend=backend, jobs_dir=jobs_dir),
    )


EXECUTORS: list[ExecutorFactory] = [local_executor, fake_executor]
