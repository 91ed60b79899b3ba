"""A controller that does not answer: nothing is read as lost, and what was running is adopted
once it answers again."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

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


def test_a_restart_while_the_controller_is_silent_adopts_once_it_answers(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    bin_dir, flag = tmp_path / "bin", tmp_path / "controller-down"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(SQUEUE.format(flag=flag, real=shutil.which("squeue")))
    (bin_dir / "squeue").chmod(0o755)
    env = {**slurm_cluster.env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    runs, jobs = tmp_path / "runs", tmp_path / "jobs"
    runs.mkdir()
    jobs.mkdir()

    def make() -> SlurmExecutor:
        commands = SlurmCommands(env, submit_per_s=1000)
        return SlurmExecutor(runs, jobs, commands, server_id="outage", poll_s=0.1)

    async def scenario() -> None:
        ends: list[ExitRecord | UnreadableExit] = []

        async def exited(record: ExitRecord | UnreadableExit) -> None:
            ends.append(record)

        async def lost() -> None:
            return None

        events = ExecutorEvents(exited, lost)
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
