"""The executors held to the Executor protocol by tests/integration/test_executor_contract.py.

To add one: write a factory with the `ExecutorFactory` signature (an async context manager
yielding a `Subject`, cleaning up after itself) and append it to EXECUTORS.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from runyard.clock import SystemClock
from runyard.execution.base import Executor, Launch, Started
from runyard.execution.executor import LocalExecutor
from runyard.execution.slurm.commands import SlurmCommands
from runyard.execution.slurm.executor import SlurmExecutor
from tests.fakes import FakeBackend, FakeExecutor, acted_command
from tests.slurm_cluster import shared_cluster
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


@contextlib.asynccontextmanager
async def slurm_executor(tmp_path: Path) -> AsyncIterator[Subject]:
    """Slurm: a real one-node cluster (tests/slurm_cluster.py), run directories in a
    directory its node sees, a fast poll."""
    cluster = shared_cluster()
    runs_dir, jobs_dir = tmp_path / "shared" / "runs", tmp_path / "jobs"
    runs_dir.mkdir(parents=True)
    jobs_dir.mkdir()
    server_id = f"contract-{uuid.uuid4().hex[:8]}"  # its jobs, and only its jobs, adopted

    def make() -> SlurmExecutor:
        return SlurmExecutor(
            runs_dir, jobs_dir, SlurmCommands(cluster.env, submit_per_s=1000),
            server_id=server_id, poll_s=0.1, exit_grace_s=1.0,
        )  # fmt: skip

    try:
        yield Subject(executor=make(), command=shell_command, reopen=make)
    finally:
        for job in cluster.run("squeue", "-h", "-o", "%i|%j").stdout.splitlines():
            job_id, _, name = job.partition("|")
            if f":{server_id}:" in name:
                cluster.run("scancel", job_id)


class _Sandboxed(LocalExecutor):
    """The local executor with every launch sandboxed (the default [sandbox] table)."""

    def launch_now(self, spec: Launch) -> None:
        """Every launch goes through `launch`, which adds the sandbox."""

    async def launch(self, spec: Launch) -> Started | None:
        box = {"network": "none", "ro": [], "rw": [], "writable": ["workspace", "tmp"]}
        return await super().launch(dataclasses.replace(spec, sandbox=box))


@contextlib.asynccontextmanager
async def sandboxed_executor(tmp_path: Path) -> AsyncIterator[Subject]:
    """The supervisor running every program under bubblewrap: supervision means the same."""
    data_dir, jobs_dir = tmp_path / "data", tmp_path / "jobs"
    data_dir.mkdir()
    jobs_dir.mkdir()
    try:
        yield Subject(
            executor=_Sandboxed(data_dir, jobs_dir),
            command=shell_command,
            reopen=lambda: _Sandboxed(data_dir, jobs_dir),
        )
    finally:
        kill_everything(data_dir)


EXECUTORS: list[ExecutorFactory] = [
    local_executor, fake_executor, slurm_executor, sandboxed_executor,
]  # fmt: skip
