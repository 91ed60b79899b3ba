"""Health tells the truth: readiness follows the data directory's writability."""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from runyard.execution.protocol import LOCK_NAME, SOCKET_NAME
from runyard.models import RunState
from tests import web
from tests.support import ServerProcess, processes_of, supervisors_of, wait_for

pytestmark = pytest.mark.e2e


def test_ready_names_an_unwritable_data_dir_and_recovers(start_server) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is needed to make a directory read-only for root")
    server = start_server()
    ready = f"{server.url}/health/ready"
    assert web.get(ready).status_code == 200
    subprocess.run(["chattr", "+i", str(server.data_dir)], check=True)
    try:
        wait_for(lambda: web.get(ready).status_code == 503, timeout=10, what="not ready")
        body = web.get(ready).json()
        assert "data_dir" in body["checks"]
        assert "not writable" in body["checks"]["data_dir"]
        assert web.get(f"{server.url}/health/live").status_code == 200
    finally:
        subprocess.run(["chattr", "-i", str(server.data_dir)], check=True)
    wait_for(lambda: web.get(ready).status_code == 200, timeout=10, what="ready again")


@pytest.mark.parametrize("entry", ["uploads", "runs"])
def test_ready_names_a_file_put_where_a_directory_of_the_data_dir_belongs(
    start_server, entry: str
) -> None:
    """A file in the place of uploads/ failed every upload (503, "Not a directory") while
    readiness said ok; in the place of runs/, every run. Readiness names the path and what is
    there, and is itself again once the file is moved aside (the directory is made anew)."""
    server = start_server()
    ready = f"{server.url}/health/ready"
    directory = server.data_dir / entry
    directory.mkdir(exist_ok=True)
    directory.rename(server.data_dir / f"{entry}.moved")
    directory.write_text("not a directory\n")
    wait_for(lambda: web.get(ready).status_code == 503, timeout=10, what="not ready")
    why = web.get(ready).json()["checks"]["data_dir"]
    assert f"{directory} is a regular file" in why, why
    directory.unlink()
    wait_for(lambda: web.get(ready).status_code == 200, timeout=10, what="ready again")


def test_ready_names_a_jobs_directory_that_cannot_be_listed(start_server, jobs_dir: Path) -> None:
    """With its jobs directory gone (or a file in its place) a server can take no submission
    and start no run, yet readiness said ok: it names the directory now, and is itself again
    once the directory is back. An empty directory is no fault: only one it cannot list."""
    server = start_server(jobs_dir)
    ready = f"{server.url}/health/ready"
    assert web.get(ready).status_code == 200  # no job in it yet: ready all the same
    jobs_dir.rename(jobs_dir.with_name("jobs.moved"))
    wait_for(lambda: web.get(ready).status_code == 503, timeout=10, what="not ready")
    assert "No such file or directory" in web.get(ready).json()["checks"]["jobs_dir"]
    jobs_dir.write_text("not a directory\n")
    wait_for(lambda: "Not a directory" in web.get(ready).json()["checks"].get("jobs_dir", ""),
             timeout=10, what="the file named")  # fmt: skip
    jobs_dir.unlink()
    jobs_dir.with_name("jobs.moved").rename(jobs_dir)
    wait_for(lambda: web.get(ready).status_code == 200, timeout=10, what="ready again")


def test_a_run_dispatched_while_a_file_is_where_the_runs_belong_waits_and_then_runs(
    start_server,
) -> None:
    """The server's fault, not the run's: it failed ("Not a directory"); now it goes back to
    the queue, and runs once the file is moved."""
    server = start_server()
    runs = server.data_dir / "runs"
    runs.rename(server.data_dir / "runs.moved")
    runs.write_text("not a directory\n")
    run_id = web.post(f"{server.url}/v1/runs", json={"job": "true"}).json()["id"]
    url = f"{server.url}/v1/runs/{run_id}"
    wait_for(lambda: web.get(url).json()["attempt"] >= 1 and web.get(url).json()["state"]
             == "queued", what="the run refused and queued again")  # fmt: skip
    assert "Not a directory" in web.get(url).json()["reason"]
    runs.unlink()
    wait_for(lambda: web.get(url).json()["state"] == "succeeded", what="the run to run")


def test_a_link_where_a_queued_runs_directory_belongs_is_not_followed(
    start_server, jobs_dir: Path, write_job, tmp_path: Path
) -> None:
    """A probe: a link put at a queued run's directory (DATA/runs/ID) was followed when the
    run started: its workspace, log, exit and progress files were all made in the link's
    target by the supervisor, and the run succeeded. Like a file in its place, it is now
    refused ("File exists"), and nothing is made where it leads."""
    write_job("one", 'command = ["sleep", "{s}"]\nconcurrency = 1\n[params.s]\ntype = "int"\n')
    server = start_server(jobs_dir)
    runs = f"{server.url}/v1/runs"
    first = web.post(runs, json={"job": "one", "params": {"s": 60}}).json()["id"]
    wait_for(lambda: web.get(f"{runs}/{first}").json()["state"] == "running", what="running")
    second = web.post(runs, json={"job": "one", "params": {"s": 0}}).json()["id"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (server.data_dir / "runs" / second).symlink_to(elsewhere)
    web.post(f"{runs}/{first}/cancel")
    wait_for(lambda: web.get(f"{runs}/{second}").json()["state"] in ("failed", "succeeded"),
             what="the second run to end")  # fmt: skip
    done = web.get(f"{runs}/{second}").json()
    assert done["state"] == "failed", done
    assert "File exists" in done["reason"], done
    assert list(elsewhere.iterdir()) == []


def test_health_reports_capacity(start_server) -> None:
    server = start_server(capacity=3)
    body = web.get(f"{server.url}/health").json()
    assert body["capacity"] == 3
    assert body["active"] == 0
    assert body["busy"] is False
    assert body["scheduler"]["status"] == "running"
    assert body["snapshot_at"]


def test_health_counts_submissions_at_once(start_server) -> None:
    """Defect 14: /health read right after a submission's answer includes it."""
    server = start_server(capacity=1)
    with server.client() as c:
        blocker = c.submit("sleeper", {"seconds": 60})
        wait_for(lambda: c.run(blocker.id).state is RunState.RUNNING, what="blocker running")
        # settled: the blocker counted as running, no longer as the queued run its
        # submission was counted as at once (until the next rebuild of the snapshot)
        wait_for(lambda: (h := web.get(f"{server.url}/health").json())["active"] == 1
                 and h["queued"] == 0, what="active")  # fmt: skip
        for n in range(1, 4):
            c.submit("sleeper", {"seconds": 60})
            assert web.get(f"{server.url}/health").json()["queued"] == n
        c.batch("sleeper", {"seconds": 60}, iterations=3)
        assert web.get(f"{server.url}/health").json()["queued"] == 6
        for run in c.runs().runs:
            c.cancel(run.id)


@pytest.fixture
def stopped_supervisor() -> Iterator[Callable[[ServerProcess], psutil.Process]]:
    """SIGSTOP a server's supervisor; always SIGCONT it again afterwards."""
    stopped: list[psutil.Process] = []

    def stop(server: ServerProcess) -> psutil.Process:
        (sup,) = supervisors_of(server.data_dir)
        sup.send_signal(signal.SIGSTOP)
        stopped.append(sup)
        return sup

    yield stop
    for sup in stopped:
        with contextlib.suppress(psutil.Error):
            sup.send_signal(signal.SIGCONT)


def test_a_paused_supervisor_is_noticed_and_nothing_hangs(start_server, stopped_supervisor) -> None:
    """Defect 15: readiness says the supervisor does not answer, a cancel answers 503 instead
    of hanging, a run being started goes back to the queue instead of staying `starting`, and
    once the supervisor runs again everything proceeds, with no second live attempt."""
    server = start_server(capacity=2, env={"RUNYARD_SUPERVISOR_TIMEOUT_S": "1"})
    ready = f"{server.url}/health/ready"
    with server.client() as c:
        first = c.submit("sleeper", {"seconds": 60}).id
        wait_for(lambda: processes_of(server.data_dir), what="first program running")
        sup = stopped_supervisor(server)
        wait_for(lambda: "executor" in web.get(ready).json()["checks"], what="not ready")
        assert "does not answer" in web.get(ready).json()["checks"]["executor"]
        resp = web.post(f"{server.url}/v1/runs/{first}/cancel", timeout=30)
        assert resp.status_code == 503
        assert "supervisor" in resp.json()["detail"]
        second = c.submit("sleeper", {"seconds": 60}).id
        # its spawn is not answered: the attempt ends as never started, the run is re-queued
        wait_for(
            lambda: any(a.state == "lost" for a in c.run(second).attempts), what="spawn given up"
        )
        sup.send_signal(signal.SIGCONT)
        wait_for(lambda: web.get(ready).status_code == 200, what="ready again")
        # the cancel was recorded before the 503: it takes effect once the supervisor runs
        assert server.wait_run(c, first).state is RunState.CANCELLED
        wait_for(lambda: c.run(second).state is RunState.RUNNING, what="second running again")
        wait_for(lambda: processes_of(server.data_dir), what="second program running")
        # the spawn given up on never started late: one program, of the live attempt
        (program,) = processes_of(server.data_dir)
        env = program.environ()
        assert env["RUNYARD_RUN_ID"] == second
        assert env["RUNYARD_ATTEMPT"] == str(c.run(second).attempt)
        c.cancel(second)
        assert server.wait_run(c, second).state is RunState.CANCELLED


@pytest.mark.leaks_allowed(
    "measured at start, before it could reach its supervisor: its connection is no leak"
)
def test_a_server_starts_at_once_beside_a_stopped_supervisor_and_adopts_its_programs(
    start_server, stopped_supervisor
) -> None:
    """A probe: a server started beside a supervisor stopped with SIGSTOP (a server killed
    meanwhile) kept its port closed for a request timeout and a health build (17 s at the
    defaults): its first connection went into the stopped process's backlog and every request
    waited. With a 60 s timeout the port opens at once all the same (start() waits 30 s for
    it): not ready, saying so; once continued, the program still running is adopted."""
    first = start_server(capacity=2)
    with first.client() as c:
        run = c.submit("sleeper", {"seconds": 120}).id
        (program,) = wait_for(lambda: processes_of(first.data_dir), what="program running")
    first.stop(signal.SIGKILL)
    sup = stopped_supervisor(first)
    server = start_server(
        capacity=2, data_dir=first.data_dir, health="/health/live",
        env={"RUNYARD_SUPERVISOR_TIMEOUT_S": "60"},
    )  # fmt: skip
    ready = web.get(f"{server.url}/health/ready")
    assert ready.status_code == 503
    assert "supervisor" in ready.json()["checks"]["executor"], ready.json()
    sup.send_signal(signal.SIGCONT)
    wait_for(lambda: web.get(f"{server.url}/health/ready").status_code == 200, what="ready")
    with server.client() as c:
        adopted = c.run(run)
        assert adopted.state is RunState.RUNNING
        assert adopted.attempt == 1
        assert processes_of(server.data_dir) == [program]  # the same program, never retried
        c.cancel(run)
        assert server.wait_run(c, run).state is RunState.CANCELLED
    assert "supervisor_unreachable" in server.log_path.read_text()


def test_a_deleted_database_file_is_noticed_and_writes_refused(start_server) -> None:
    """Defect 15: the database file deleted under a running server: not ready, submissions
    refused (rather than accepted into a file that is gone), reads still answered."""
    server = start_server()
    with server.client() as c:
        run = server.wait_run(c, c.submit("true").id)
    (server.data_dir / "runyard.db").unlink()
    ready = f"{server.url}/health/ready"
    wait_for(lambda: "database" in web.get(ready).json()["checks"], what="not ready")
    assert "deleted or replaced" in web.get(ready).json()["checks"]["database"]
    resp = web.post(f"{server.url}/v1/runs", json={"job": "true"})
    assert resp.status_code == 503
    assert "deleted or replaced" in resp.json()["detail"]
    assert web.get(f"{server.url}/v1/runs/{run.id}").status_code == 200


@pytest.mark.leaks_allowed(
    "measured at start, before it could reach its supervisor: its connection is no leak"
)
def test_a_server_starts_beside_a_supervisor_it_cannot_reach_and_connects_once_it_can(
    start_server, tmp_path: Path
) -> None:
    """A probe: the data directory's supervisor lock held by a process that does not listen
    (a stale socket file beside it) made the server exit at start (rc 3, a traceback), as did
    a stopped supervisor whose backlog was full. It starts: alive, not ready (saying why),
    taking submissions; and connects once a supervisor can be reached, the run then run."""
    data = tmp_path / "data"
    data.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(data / SOCKET_NAME))
    stale.close()  # the file stays: a connect is refused
    holder = (data / LOCK_NAME).open("a")
    fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
    try:
        server = start_server(data_dir=data, health="/health/live")
        ready = web.get(f"{server.url}/health/ready")
        assert ready.status_code == 503
        assert "supervisor" in ready.json()["checks"]["executor"], ready.json()
        with server.client() as c:
            run = c.submit("true").id
            assert c.run(run).state is RunState.QUEUED
    finally:
        holder.close()  # a supervisor can take the directory now
    wait_for(lambda: web.get(f"{server.url}/health/ready").status_code == 200, what="ready")
    with server.client() as c:
        assert server.wait_run(c, run).state is RunState.SUCCEEDED
