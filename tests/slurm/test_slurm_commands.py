"""Slurm's commands as the executor calls them: transient failures retried, sbatch paced, a
controller that stops answering seen by readiness."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from runyard.execution.slurm.commands import SlurmCommands, SlurmError
from tests import web
from tests.slurm_cluster import SlurmCluster
from tests.support import ServerProcess, free_port, wait_for

FLAKY_SBATCH = """#!/bin/sh
# fails as a busy controller does until its counter runs out, then answers as sbatch does
echo "$(date +%s.%N)" >> "{calls}"
n=$(wc -l < "{calls}")
if [ "$n" -le {failures} ]; then
    echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2
    exit 1
fi
echo "4242"
"""


def fake_sbatch(tmp_path: Path, failures: int) -> tuple[dict[str, str], Path]:
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    script = bin_dir / "sbatch"
    script.write_text(FLAKY_SBATCH.format(calls=calls, failures=failures))
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, calls


def test_a_transient_error_is_retried_until_slurm_answers(tmp_path: Path) -> None:
    env, calls = fake_sbatch(tmp_path, failures=2)
    job_id = asyncio.run(SlurmCommands(env).submit(["--parsable"], "#!/bin/sh\n"))
    assert job_id == "4242"
    assert len(calls.read_text().splitlines()) == 3


def test_a_refusal_is_not_retried(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    commands = SlurmCommands(slurm_cluster.env)
    with pytest.raises(SlurmError) as refused:
        asyncio.run(commands.submit(["--parsable", "--partition=nosuch"], "#!/bin/sh\ntrue\n"))
    assert "partition" in refused.value.message.lower()
    assert commands.calls["sbatch"] == 1


def test_submissions_are_paced(tmp_path: Path) -> None:
    env, calls = fake_sbatch(tmp_path, failures=0)
    commands = SlurmCommands(env, submit_per_s=20)

    async def five() -> float:
        began = time.monotonic()
        await asyncio.gather(*(commands.submit([], "#!/bin/sh\n") for _ in range(5)))
        return time.monotonic() - began

    # at most 20 a second: the fifth cannot start before four gaps of 1/20 s have passed
    assert asyncio.run(five()) >= 4 / 20
    assert len(calls.read_text().splitlines()) == 5


def test_readiness_says_when_the_controller_stops_answering(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    srv = ServerProcess(
        tmp_path / "data", jobs, free_port(), 2, tmp_path / "server.log",
        env={**slurm_cluster.env, "RUNYARD_SLURM_SHARED_DIR": str(tmp_path / "shared"),
             "RUNYARD_SLURM_POLL_S": "0.2"},
    ).start()  # fmt: skip
    controller = slurm_cluster.controller_pid()
    try:
        os.kill(controller, signal.SIGSTOP)
        body = wait_for(
            lambda: (r := web.get(f"{srv.url}/health/ready", timeout=30)).status_code == 503
            and r.json(),
            timeout=60, what="readiness to fail",
        )  # fmt: skip
        assert "slurm" in str(body)
    finally:
        os.kill(controller, signal.SIGCONT)
    try:
        wait_for(
            lambda: web.get(f"{srv.url}/health/ready", timeout=30).status_code == 200,
            timeout=60, what="readiness back",
        )  # fmt: skip
    finally:
        srv.stop()


def test_accounting_is_probed_and_absent_without_slurmdbd(slurm_cluster: SlurmCluster) -> None:
    commands = SlurmCommands(slurm_cluster.env)
    assert asyncio.run(commands.accounting()) is False  # the test cluster keeps none
    assert asyncio.run(commands.accounting()) is False
    assert commands.calls["sacct"] == 1  # probed once


HUNG = """#!/bin/sh
sleep {marker}
"""


def test_hung_calls_are_killed_whole_and_keep_to_their_own_threads(tmp_path: Path) -> None:
    """A Slurm command that hangs (a hung NFS mount, munge): a readiness ping's call was left
    to its 60 s, each in a thread of the event loop's shared pool — a few readiness checks
    filled it, and every request needing a thread waited (a probe: a submit took 31 s). Calls
    have threads of their own, a call past its time is killed with what it started, and the
    ping's time is readiness's own."""
    import psutil

    marker = "987654.25"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(HUNG.format(marker=marker))
    (bin_dir / "scontrol").chmod(0o755)
    commands = SlurmCommands({**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})

    def hung() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]

    async def scenario() -> None:
        with pytest.raises(SlurmError, match="no answer in 1 s"):
            await commands.ping(timeout_s=1)
        # the script and its sleep: killed, not left to run (the sleep, SIGKILLed with its
        # group, may take a moment to go on a loaded machine: a clean clone saw it still there)
        await asyncio.to_thread(wait_for, lambda: hung() == [], 30, "the hung call killed")
        pings = [asyncio.ensure_future(commands.ping()) for _ in range(12)]
        await asyncio.to_thread(wait_for, lambda: len(hung()) >= 8, 30, "the calls to hang")
        # the loop's own pool is free for everything else meanwhile
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 30) == "free"
        commands.close()  # the executor stops: what is in flight is killed
        results = await asyncio.gather(*pings, return_exceptions=True)
        assert all(isinstance(r, SlurmError) for r in results), results

    asyncio.run(scenario())
    wait_for(lambda: hung() == [], what="nothing of the hung calls left")
