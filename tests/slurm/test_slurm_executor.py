"""The Slurm executor through a real runyard server and a real one-node Slurm cluster."""

from __future__ import annotations

import os
import shutil
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from runyard.client import Client, LogPiece, StreamEnd
from runyard.schemas import RunView
from tests import web
from tests.slurm_cluster import SlurmCluster
from tests.support import ServerProcess, free_port, wait_for

pytestmark = pytest.mark.xdist_group("slurm")

JOBS = {
    "exits": """
        executor = "slurm"
        command = ["sh", "-c", "echo out; echo err >&2; exit {code}"]
        [params.code]
        type = "int"
    """,
    "killed": """
        executor = "slurm"
        command = ["sh", "-c", "kill -KILL $$"]
    """,
    "sleeps": """
        executor = "slurm"
        command = ["sh", "-c", "echo started; exec sleep {seconds}"]
        kill_grace_s = 2
        [params.seconds]
        type = "int"
    """,
    "later": """
        executor = "slurm"
        command = ["true"]
        [slurm.options]
        begin = "now+3600"
    """,
    "slow": """
        executor = "slurm"
        command = ["sh", "-c", "exec sleep 60"]
        timeout_s = 2
        kill_grace_s = 1
    """,
    "nowhere": """
        executor = "slurm"
        command = ["true"]
        [slurm]
        partition = "nosuchpartition"
    """,
    "reports": """
        executor = "slurm"
        command = ["sh", "-c", '''
            echo '{{"pct": 50, "note": "half"}}' >> "$RUNYARD_PROGRESS_FILE"
            echo result > "$RUNYARD_ARTIFACTS_DIR/answer.txt"
        ''']
    """,
    "reads": """
        executor = "slurm"
        command = ["sh", "-c", 'wc -l < "$0" > "$RUNYARD_ARTIFACTS_DIR/lines.txt"', "{data}"]
        [params.data]
        type = "file"
    """,
    "late": """
        executor = "slurm"
        command = ["sh", "-c", "echo started; sleep 2; exit 5"]
    """,
    "counts": """
        executor = "slurm"
        command = ["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done"]
    """,
    "yields": """
        executor = "slurm"
        command = ["sh", "-c", "echo started; sleep 2"]
        resources = {cpus = 2}
        [slurm]
        requeue = true
    """,
    "holds": """
        executor = "slurm"
        command = ["sh", "-c", "echo started; exec sleep 60"]
        kill_grace_s = 1
        resources = {cpus = 2}
    """,
}


@pytest.fixture
def server(slurm_cluster: SlurmCluster, tmp_path: Path) -> Iterator[ServerProcess]:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for name, body in JOBS.items():
        (jobs / f"{name}.toml").write_text(textwrap.dedent(body))
    shared = tmp_path / "shared"
    srv = ServerProcess(
        tmp_path / "data", jobs, free_port(), 300, tmp_path / "server.log",
        env={
            **slurm_cluster.env,
            "RUNYARD_SLURM_SHARED_DIR": str(shared),
            "RUNYARD_SLURM_POLL_S": "0.2",
            "RUNYARD_SLURM_EXIT_GRACE_S": "2",
            "RUNYARD_SLURM_SUBMIT_PER_S": "1000",
            "RUNYARD_SERVER_ID": f"t{free_port()}",
        },
    ).start()  # fmt: skip
    try:
        yield srv
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.stop(signal.SIGKILL)
        slurm_cluster.run("scancel", "-u", "root")


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client() as c:
        yield c


def finished(srv: ServerProcess, client: Client, run_id: str, timeout: float = 60) -> RunView:
    return srv.wait_run(client, run_id, timeout=timeout)


def log_of(client: Client, run_id: str) -> str:
    return client.logs(run_id)[0].decode(errors="replace")


def job_id_of(client: Client, run_id: str) -> str:
    """The Slurm job id: an attempt on Slurm shows it as its pid."""
    attempts = client.run(run_id).attempts or []
    return str(attempts[-1].pid)


def status(srv: ServerProcess) -> dict[str, object]:
    body = web.get(f"{srv.url}/v1/status", timeout=10).json()
    found: dict[str, object] = body["executor"]["slurm"]
    return found


def test_exit_codes_and_output_come_back_from_the_node(
    server: ServerProcess, client: Client
) -> None:
    ok = client.submit("exits", {"code": 0})
    bad = client.submit("exits", {"code": 3})
    assert finished(server, client, ok.id).state == "succeeded"
    failed = finished(server, client, bad.id)
    assert (failed.state, failed.exit_code) == ("failed", 3)
    text = log_of(client, bad.id)
    assert text == "out\nerr\n"  # stdout and stderr, in the attempt's log in the shared dir


def test_a_signal_death_is_read_as_one(server: ServerProcess, client: Client) -> None:
    run = finished(server, client, client.submit("killed", {}).id)
    assert run.state == "failed"
    assert "signal 9" in (run.reason or "") or "SIGKILL" in (run.reason or "")


def test_progress_and_artifacts_are_read_from_the_shared_directory(
    server: ServerProcess, client: Client, tmp_path: Path
) -> None:
    run = finished(server, client, client.submit("reports", {}).id)
    assert run.state == "succeeded"
    listed = client.artifacts(run.id)
    assert "outputs/answer.txt" in listed.model_dump_json()
    got = client.download(run.id, "outputs/answer.txt", tmp_path / "answer.txt")
    assert got.read_text() == "result\n"
    assert client.run(run.id).progress is not None


def test_slurm_refusing_the_job_fails_the_run_with_its_message(
    server: ServerProcess, client: Client
) -> None:
    run = finished(server, client, client.submit("nowhere", {}).id)
    assert run.state == "failed"
    assert "partition" in (run.reason or "").lower()


def test_cancel_while_pending_in_slurm(
    server: ServerProcess, slurm_cluster: SlurmCluster, client: Client
) -> None:
    run = client.submit("later", {})
    wait_for(lambda: client.run(run.id).state == "running", what="submitted to Slurm")
    job_id = job_id_of(client, run.id)
    client.cancel(run.id)
    assert finished(server, client, run.id).state == "cancelled"
    assert slurm_cluster.job(job_id).get("JobState", "CANCELLED") == "CANCELLED"


def test_cancel_while_running_sends_term_then_ends_cancelled(
    server: ServerProcess, client: Client
) -> None:
    run = client.submit("sleeps", {"seconds": 60})
    wait_for(lambda: "started" in log_of(client, run.id), timeout=60, what="program running")
    client.cancel(run.id)
    ended = finished(server, client, run.id)
    assert ended.state == "cancelled", ended.reason


def test_timeout_is_runyards_own_not_slurms(server: ServerProcess, client: Client) -> None:
    run = finished(server, client, client.submit("slow", {}).id)
    assert run.state == "timed_out"


def test_a_job_that_ends_without_an_exit_file_is_lost_never_success(
    server: ServerProcess, slurm_cluster: SlurmCluster, client: Client
) -> None:
    run = client.submit("sleeps", {"seconds": 60})
    wait_for(lambda: "started" in log_of(client, run.id), timeout=60, what="program running")
    job_id = job_id_of(client, run.id)
    # the batch shell dies at once: no trap runs, no exit file is written
    slurm_cluster.run("scancel", "--batch", "--signal=KILL", job_id, check=True)
    ended = finished(server, client, run.id)
    assert ended.state == "failed"
    assert "lost" in (ended.reason or "") and "without an exit file" in (ended.reason or "")
    assert "ExitCode=0:9" in (ended.reason or "")  # what Slurm said, filled in from scontrol


def test_the_server_killed_while_jobs_run_readopts_them(
    server: ServerProcess, slurm_cluster: SlurmCluster, client: Client
) -> None:
    run = client.submit("sleeps", {"seconds": 4})
    wait_for(lambda: "started" in log_of(client, run.id), timeout=60, what="program running")
    job_id = job_id_of(client, run.id)
    server.stop(signal.SIGKILL)
    server.start()
    ended = finished(server, client, run.id)
    assert ended.state == "succeeded"
    attempts = client.run(run.id).attempts or []
    assert [str(a.pid) for a in attempts] == [job_id]  # adopted, never submitted again


def test_a_restart_whose_squeue_leaves_a_running_job_out_adopts_it(
    server: ServerProcess, slurm_cluster: SlurmCluster, client: Client, tmp_path: Path
) -> None:
    """A probe: restarted while squeue answered without the running job (exit 0, nothing
    listed), the server took its attempt for lost: it cancelled the job and retried the run,
    a healthy attempt spent. The controller is asked of an attempt the list left out."""
    run = client.submit("holds")
    wait_for(lambda: "started" in log_of(client, run.id), timeout=60, what="program running")
    job_id = job_id_of(client, run.id)
    server.stop(signal.SIGKILL)
    bin_dir, flag = tmp_path / "bin", tmp_path / "empty"
    bin_dir.mkdir()
    real = shutil.which("squeue", path=server.env.get("PATH"))
    (bin_dir / "squeue").write_text(f'#!/bin/sh\n[ -e "{flag}" ] && exit 0\nexec {real} "$@"\n')
    (bin_dir / "squeue").chmod(0o755)
    flag.touch()
    server.env["PATH"] = f"{bin_dir}:{server.env.get('PATH', os.environ['PATH'])}"
    server.env["RUNYARD_SLURM_EXIT_GRACE_S"] = "600"  # not listed: in doubt, for a long while
    server.start()  # ready: its first reconcile pass is over
    adopted = client.run(run.id)
    assert adopted.state == "running", adopted
    assert [str(a.pid) for a in adopted.attempts or []] == [job_id]  # never retried
    assert "JobState=RUNNING" in slurm_cluster.run("scontrol", "show", "job", "-o", job_id).stdout
    # A cancel while squeue still leaves it out (polled since) was dropped: "already ended"
    polls = int(str(status(server)["polls"]))
    wait_for(lambda: int(str(status(server)["polls"])) > polls + 1, what="polls without it")
    client.cancel(run.id)
    assert finished(server, client, run.id, timeout=30).state == "cancelled"
    assert "JobState=RUNNING" not in slurm_cluster.run("scontrol", "show", "job", job_id).stdout
    flag.unlink()


def test_one_squeue_per_period_with_200_jobs_in_flight(
    server: ServerProcess, client: Client
) -> None:
    batch = web.post(
        f"{server.url}/v1/batches", json={"job": "later", "iterations": 200}, timeout=30
    )
    assert batch.status_code in {201, 202}, batch.text
    wait_for(lambda: status(server)["in_flight"] == 200, timeout=120, what="200 jobs in Slurm")
    before = status(server)
    wait_for(lambda: int(status(server)["polls"]) >= int(before["polls"]) + 5, what="polls")
    after = status(server)
    polls = int(after["polls"]) - int(before["polls"])
    calls = int(after["squeue_calls"]) - int(before["squeue_calls"])
    assert calls == polls
    assert after["by_state"] == {"PENDING": 200}


def preempt(cluster: SlurmCluster) -> None:
    """A job in the higher partition that needs the node now."""
    cluster.run("sbatch", "-p", "high", "-c", "1", "--wrap", "sleep 1", check=True)


def test_preemption_requeues_a_requeueable_job_under_the_same_id(
    server: ServerProcess, client: Client, slurm_cluster: SlurmCluster
) -> None:
    run = client.submit("yields", {})
    wait_for(lambda: "started" in log_of(client, run.id), timeout=60, what="program running")
    job_id = job_id_of(client, run.id)
    preempt(slurm_cluster)
    wait_for(
        lambda: slurm_cluster.job(job_id).get("JobState") == "PENDING"
        and slurm_cluster.job(job_id).get("Restarts") == "1",
        timeout=60, what="requeued by Slurm",
    )  # fmt: skip
    assert client.run(run.id).state == "running"  # put off, not ended: one live attempt
    slurm_cluster.release_requeued(job_id)
    ended = finished(server, client, run.id, timeout=120)
    assert ended.state == "succeeded"
    assert [str(a.pid) for a in ended.attempts or []] == [job_id]
    text = log_of(client, run.id)
    assert text.splitlines().count("started") == 2  # the program ran twice, one log
    assert "restarted by Slurm" in text  # and the log says where the second start began


def test_preemption_of_a_job_that_may_not_requeue_ends_its_attempt_lost(
    server: ServerProcess, client: Client, slurm_cluster: SlurmCluster
) -> None:
    run = client.submit("holds", {})
    wait_for(lambda: "started" in log_of(client, run.id), timeout=60, what="program running")
    preempt(slurm_cluster)
    ended = finished(server, client, run.id, timeout=60)
    assert ended.state == "failed"
    assert "preempted" in (ended.reason or "")


def test_jobs_purged_from_squeue_while_the_server_was_down(
    server: ServerProcess, client: Client, slurm_cluster: SlurmCluster
) -> None:
    """Ended and forgotten by Slurm (MinJobAge) before the restarted server looked: the exit
    file says how one ended; the other, whose batch shell was killed, left none: lost."""
    recorded = client.submit("late", {})
    unrecorded = client.submit("sleeps", {"seconds": 60})
    for run in (recorded, unrecorded):
        wait_for(lambda r=run: "started" in log_of(client, r.id), timeout=60, what="running")
    jobs = [job_id_of(client, recorded.id), job_id_of(client, unrecorded.id)]
    server.stop(signal.SIGKILL)
    slurm_cluster.run("scancel", "--batch", "--signal=KILL", jobs[1], check=True)
    wait_for(lambda: all(slurm_cluster.job(j) == {} for j in jobs), timeout=90, what="purged")
    server.start()
    first = finished(server, client, recorded.id)
    assert (first.state, first.exit_code) == ("failed", 5)  # its true exit code, from the file
    second = finished(server, client, unrecorded.id)
    assert second.state == "failed"
    assert "lost" in (second.reason or "")


def test_the_log_streams_live_from_the_shared_directory(
    server: ServerProcess, client: Client
) -> None:
    """Another host's writes never reach inotify: the tailer polls there, and a watcher
    gets every byte, in order, then the end."""
    run = client.submit("counts", {})
    got = b""
    end = None
    for item in client.stream_log(run.id):
        if isinstance(item, LogPiece):
            got += item.data
        elif isinstance(item, StreamEnd):
            end = item
    assert got == b"".join(f"line {i}\n".encode() for i in range(1, 6))
    assert end is not None and end.kind == "end"


def test_a_file_input_is_staged_into_the_shared_run_directory(
    server: ServerProcess, client: Client, tmp_path: Path
) -> None:
    put = web.put(f"{server.url}/v1/uploads", params={"name": "t.csv"}, content=b"a\nb\n")
    data = f"upload:{put.json()['id']}"
    run = finished(server, client, client.submit("reads", {"data": data}).id)
    assert run.state == "succeeded", run.reason
    got = client.download(run.id, "outputs/lines.txt", tmp_path / "lines.txt")
    assert got.read_text().strip() == "2"
