"""A controller that does not answer: nothing is read as lost, and what was running is adopted
once it answers again."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from runyard.execution.base import ExecutorEvents, ExecutorUnavailableError, Launch
from runyard.execution.protocol import ExitRecord, UnreadableExit
from runyard.execution.slurm.commands import SlurmCommands
from runyard.execution.slurm.executor import SlurmExecutor
from tests.slurm_cluster import SlurmCluster

# squeue that fails as an unreachable controller does while the flag file exists
SQUEUE = """#!/bin/sh
if [ -e "{flag}" ]; then
    echo "squeue: error: Unable to contact slurm controller (connect failure)" >&2
    exit 1
fi
exec {real} "$@"
"""


def wrapped_squeue(
    slurm_cluster: SlurmCluster, tmp_path: Path, script: str
) -> tuple[dict[str, str], Path, Path, Path]:
    """The cluster's environment with `squeue` wrapped by `script` (which acts while its flag
    file exists): (env, flag, runs dir, jobs dir)."""
    bin_dir, flag = tmp_path / "bin", tmp_path / "flag"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(script.format(flag=flag, real=shutil.which("squeue")))
    (bin_dir / "squeue").chmod(0o755)
    runs, jobs = tmp_path / "runs", tmp_path / "jobs"
    runs.mkdir()
    jobs.mkdir()
    return {**slurm_cluster.env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, flag, runs, jobs


def recording(ends: list[ExitRecord | UnreadableExit]) -> ExecutorEvents:
    async def exited(record: ExitRecord | UnreadableExit) -> None:
        ends.append(record)

    async def lost() -> None:
        return None

    return ExecutorEvents(exited, lost)


def test_a_restart_while_the_controller_is_silent_adopts_once_it_answers(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    env, flag, runs, jobs = wrapped_squeue(slurm_cluster, tmp_path, SQUEUE)

    def make() -> SlurmExecutor:
        commands = SlurmCommands(env, submit_per_s=1000)
        return SlurmExecutor(runs, jobs, commands, server_id="outage", poll_s=0.1)

    async def scenario() -> None:
        ends: list[ExitRecord | UnreadableExit] = []
        events = recording(ends)
        first = make()
        await first.start(events)
        spec = Launch("R1", 1, ["sleep", "30"], {}, "empty", {}, None, 1.0)
        started = await first.launch(spec)
        await first.stop()  # the server goes away; the job does not
        flag.touch()  # and the controller stops answering
        again = make()
        await again.start(events)
        try:
            try:
                await again.running()
                raise AssertionError("running() answered while Slurm did not")
            except ExecutorUnavailableError:
                pass  # nothing may be read as lost meanwhile
            flag.unlink()
            await again.poll()  # the controller's first answer
            listed = await again.running()
            assert listed["R1.1"].pid == started.pid  # adopted, not submitted again
            assert ends == []
        finally:
            await again.cancel("R1", 1)
            await again.stop()

    asyncio.run(scenario())


# squeue that answers, with nothing, while the flag file exists (a partial or empty answer)
SQUEUE_EMPTY = """#!/bin/sh
if [ -e "{flag}" ]; then
    exit 0
fi
exec {real} "$@"
"""


def test_a_running_job_squeue_leaves_out_is_not_read_as_ended(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """squeue answered without the job (exit 0, nothing listed) while the controller had it
    running: once the exit file's grace was over it was lost and retried — beside itself,
    and again (a probe: three live jobs for one run). The controller is asked first."""
    env, flag, runs, jobs = wrapped_squeue(slurm_cluster, tmp_path, SQUEUE_EMPTY)
    grace = 0.3

    async def scenario() -> None:
        ends: list[ExitRecord | UnreadableExit] = []
        commands = SlurmCommands(env, submit_per_s=1000)
        executor = SlurmExecutor(
            runs, jobs, commands, server_id="partial", poll_s=3600, exit_grace_s=grace
        )
        await executor.start(recording(ends))
        try:
            spec = Launch("R1", 1, ["sleep", "60"], {}, "empty", {}, None, 1.0)
            started = await executor.launch(spec)
            for _ in range(300):  # Slurm starts it on its own schedule, and tells nobody
                if (await commands.show_job(str(started.pid))).get("JobState") == "RUNNING":
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("the job never ran")
            flag.touch()
            await executor.poll()  # not listed: its grace for an exit file begins
            await asyncio.sleep(grace)  # the grace is time itself
            await executor.poll()  # over: the controller says it runs
            assert ends == []
            flag.unlink()
            await executor.poll()
            assert "R1.1" in await executor.running()
        finally:
            await executor.cancel("R1", 1)
            await executor.stop()

    asyncio.run(scenario())


# squeue that hangs while the flag file exists (a hung mount, a stuck munge)
SQUEUE_HUNG = """#!/bin/sh
if [ -e "{flag}" ]; then
    sleep 600
fi
exec {real} "$@"
"""


def test_readiness_says_squeue_is_silent_while_it_follows_jobs(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """Jobs followed by squeue alone, squeue hung, the controller answering pings: readiness
    said ready — its ping even refreshed the last poll — while no end could be seen (a run's
    timeout waited for the poll). Past `squeue_late_s` it says squeue is silent."""
    env, flag, runs, jobs = wrapped_squeue(slurm_cluster, tmp_path, SQUEUE_HUNG)

    async def scenario() -> None:
        ends: list[ExitRecord | UnreadableExit] = []
        commands = SlurmCommands(env, submit_per_s=1000)
        executor = SlurmExecutor(runs, jobs, commands, server_id="hung", poll_s=0.2)
        executor.squeue_late_s = 1.0
        await executor.start(recording(ends))
        try:
            await executor.launch(Launch("R1", 1, ["sleep", "60"], {}, "empty", {}, None, 1.0))
            await executor.health(5.0)  # ready
            flag.touch()  # every squeue from now on hangs; pings still answer
            with pytest.raises(ExecutorUnavailableError, match="squeue has not answered"):
                for _ in range(100):  # until the last answer is older than squeue_late_s
                    await executor.health(5.0)
                    await asyncio.sleep(0.1)
        finally:
            flag.unlink()
            await executor.cancel("R1", 1)
            await executor.stop()

    asyncio.run(scenario())
