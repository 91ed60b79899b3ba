"""What a program on Slurm can write (its run directory) never turns the executor against
somebody else's job."""

from __future__ import annotations

import asyncio
from pathlib import Path

from runyard.execution.slurm.commands import SlurmCommands
from runyard.execution.slurm.executor import SlurmExecutor
from runyard.execution.slurm.tracking import Tracked, write_job_file
from tests.slurm_cluster import SlurmCluster


def test_a_forged_job_file_never_cancels_another_job(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    foreign = slurm_cluster.run(
        "sbatch", "--parsable", "--job-name=somebody-else", "--wrap", "sleep 60", check=True
    ).stdout.strip()
    try:
        runs = tmp_path / "runs"
        (runs / "RUN1").mkdir(parents=True)
        # the program of attempt RUN1.1 rewrote its job file to name the foreign job
        write_job_file(str(runs / "RUN1" / "attempt-1.slurm.json"),
                       Tracked("RUN1.1", foreign, None, 1.0, False))  # fmt: skip
        executor = SlurmExecutor(
            runs, tmp_path, SlurmCommands(slurm_cluster.env), server_id="hostile"
        )
        assert asyncio.run(executor.kill_leftovers("RUN1", 1, None, None)) == 0
        assert slurm_cluster.job(foreign)["JobState"] in {"PENDING", "RUNNING"}
    finally:
        slurm_cluster.run("scancel", foreign)
