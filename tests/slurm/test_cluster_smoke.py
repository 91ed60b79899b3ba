"""The test cluster itself, against real slurmctld/slurmd: what the Slurm executor's tests
will rely on (exit codes in scontrol, squeue listing, a clean stop)."""

from __future__ import annotations

import os
import select
from pathlib import Path

import psutil
import pytest

from tests.slurm_cluster import SlurmCluster

# meant to keep them on one worker (one session cluster). pytest 9.2 with xdist 3.8 does not
# honour groups (xdist renames item._nodeid, which pytest 9 no longer reads), so each worker
# may start a cluster of its own: they do not meet (own directory, ports and munged).
pytestmark = pytest.mark.xdist_group("slurm")


def script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def read_fifo(path: Path, timeout: float = 20.0) -> str:
    """What a job writes into the FIFO at `path`: the job tells when it runs, so nothing
    polls Slurm. Opened without blocking; select() wakes on the job's write (Linux does not
    report a FIFO that never had a writer as closed)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"no job wrote to {path} within {timeout} s"
        return os.read(fd, 4096).decode().strip()
    finally:
        os.close(fd)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_exit_code_shows_in_scontrol(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    job = script(tmp_path / "exit3.sh", "echo out; exit 3")
    # --wait: sbatch returns when the job has ended, with the job's exit code
    out = slurm_cluster.run("sbatch", "--wait", "--parsable", "-o", f"{tmp_path}/%j.out", str(job))
    assert out.returncode == 3, out.stderr
    job_id = out.stdout.strip()
    info = slurm_cluster.job(job_id)
    assert (info["JobState"], info["Reason"], info["ExitCode"]) == (
        "FAILED",
        "NonZeroExitCode",
        "3:0",
    )
    assert info["StdOut"] == f"{tmp_path}/{job_id}.out"
    assert (tmp_path / f"{job_id}.out").read_text() == "out\n"


def test_squeue_lists_a_running_job(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    job = script(tmp_path / "sleeper.sh", f"echo $SLURM_JOB_ID > {fifo}\nexec sleep 60")
    job_id = slurm_cluster.run("sbatch", "--parsable", "-J", "smoke-run", str(job), check=True)
    job_id_text = job_id.stdout.strip()
    try:
        assert read_fifo(fifo) == job_id_text
        listed = slurm_cluster.run("squeue", "-h", "-o", "%i|%j|%T", "--name=smoke-run,other")
        assert listed.stdout.split() == [f"{job_id_text}|smoke-run|RUNNING"]
    finally:
        slurm_cluster.run("scancel", job_id_text, check=True)


def test_stop_ends_daemons_and_jobs(tmp_path: Path) -> None:
    """A cluster of its own, stopped while a job runs: the daemons and the job are gone.
    slurmstepd outlives slurmd by design, and the job's child is an orphan of pid 1 once
    `scancel --batch` killed its batch script (Slurm's linuxproc tracking loses it)."""
    cluster = SlurmCluster(tmp_path / "cluster").start()
    try:
        fifo = tmp_path / "started"
        os.mkfifo(fifo)
        # the batch shell and its child
        job = script(tmp_path / "sleeper.sh", f'sleep 60 &\necho "$$ $!" > {fifo}\nwait')
        job_id = cluster.run("sbatch", "--parsable", str(job), check=True).stdout.strip()
        shell, child = (int(pid) for pid in read_fifo(fifo).split())
        shell_fd = os.pidfd_open(shell)
        cluster.run("scancel", "--batch", "--signal=KILL", job_id, check=True)
        # a pidfd turns readable when its process exits
        assert select.select([shell_fd], [], [], 20)[0], "the batch script outlived SIGKILL"
        os.close(shell_fd)
        assert not gone(child)
        daemons = cluster.daemon_pids()
        assert len(daemons) >= 2
    finally:
        cluster.stop()
    assert [pid for pid in [*daemons, child] if not gone(pid)] == []
    # nor slurmstepd, slurmscriptd or anything else started from the cluster's directory
    leftovers = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if str(tmp_path) in " ".join(p.info["cmdline"] or []) and not gone(p.pid)
    ]
    assert leftovers == []
    cluster.stop()  # a second stop is harmless
