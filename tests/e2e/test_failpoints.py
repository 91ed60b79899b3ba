"""Faults injected at every durable write (ENOSPC, EIO), switched on and off at runtime.

For each: reads keep working, writes are refused (507 full, 503 I/O) naming the cause, the
supervisor survives, readiness says what is wrong while it lasts, and once the fault clears
the queue moves again with no restart and no run left `running` without a process.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import httpx
import pytest

from runyard.models import RunState
from tests import web
from tests.support import ServerProcess, processes_of, supervisors_of, wait_for

pytestmark = pytest.mark.e2e

ARMED = {"RUNYARD_FAILPOINTS": "none"}  # armed for switching, no fault yet


def set_faults(server: ServerProcess, spec: str) -> None:
    """Switch the faults in force at once, in the server and its supervisor (both re-read
    DATA_DIR/failpoints when it changes); "" clears them."""
    path = server.data_dir / "failpoints"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(spec or "none")
    os.replace(tmp, path)


def checks(server: ServerProcess) -> dict[str, str]:
    resp = web.get(f"{server.url}/health/ready")
    body = resp.json()
    assert (resp.status_code == 200) == (body["checks"] == {})
    return dict(body["checks"])


def ready_again(server: ServerProcess) -> None:
    wait_for(lambda: checks(server) == {}, what="ready again")


def supervisor_pid(server: ServerProcess) -> int:
    (sup,) = supervisors_of(server.data_dir)
    return sup.pid


def submit(server: ServerProcess, job: str, params: dict[str, object] | None = None) -> str:
    resp = web.post(f"{server.url}/v1/runs", json={"job": job, "params": params or {}})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def queue_moves(server: ServerProcess) -> None:
    """A new run goes through, and nothing is left `running` without a process."""
    with server.client() as c:
        done = server.wait_run(c, submit(server, "true"))
        assert done.state is RunState.SUCCEEDED, done.reason
        running = c.runs(state="running").runs
    assert running == [] or processes_of(server.data_dir)


@pytest.mark.parametrize(
    ("fault", "status", "slug"),
    [("enospc", 507, "storage-full"), ("eio", 503, "storage-io"),
     ("emfile", 503, "out-of-resources")],  # out of descriptors: not the disk's fault
)  # fmt: skip
def test_store_commit_fault_refuses_writes_keeps_reads_and_clears(
    start_server, fault: str, status: int, slug: str
) -> None:
    server = start_server(env=ARMED)
    with server.client() as c:
        before = server.wait_run(c, submit(server, "true"))
    set_faults(server, f"store_commit={fault}")
    resp = web.post(f"{server.url}/v1/runs", json={"job": "true"})
    assert resp.status_code == status
    problem = resp.json()
    assert problem["type"].endswith(slug)
    cause = {"enospc": "No space left on device", "eio": "Input/output error",
             "emfile": "Too many open files"}[fault]  # fmt: skip
    assert cause in problem["detail"]
    assert "database" in problem["detail"]
    # reads keep working
    assert web.get(f"{server.url}/v1/runs/{before.id}").status_code == 200
    assert len(web.get(f"{server.url}/v1/runs").json()["runs"]) == 1  # nothing was stored
    wait_for(lambda: "store" in checks(server), what="readiness to name the store")
    assert cause in checks(server)["store"]
    set_faults(server, "")
    ready_again(server)
    queue_moves(server)


def test_a_server_started_on_a_store_that_refuses_writes_serves_reads_and_joins_later(
    start_server, tmp_path: Path
) -> None:
    """Its registration (a write) refused at start: it used to exit. It serves reads, claims
    nothing (no lease), says so in readiness, and joins at the next heartbeat once the store
    takes writes again; what was queued then runs."""
    env = {**ARMED, "RUNYARD_LEASE_S": "1.5"}
    server = start_server(env=env, capacity=1)
    with server.client() as c:
        done = server.wait_run(c, submit(server, "true"))
    server.stop()
    set_faults(server, "store_commit=enospc")
    started: list[ServerProcess] = []
    again = threading.Thread(target=lambda: started.append(start_server(
        env=env, capacity=1, data_dir=server.data_dir, port=server.port)))  # fmt: skip
    again.start()
    wait_for(lambda: "lease" in _checks_or_none(server), what="readiness to name the lease")
    assert web.get(f"{server.url}/v1/runs/{done.id}").json()["state"] == "succeeded"
    assert web.post(f"{server.url}/v1/runs", json={"job": "true"}).status_code == 507
    set_faults(server, "")
    again.join()
    (restarted,) = started
    queue_moves(restarted)


def _checks_or_none(server: ServerProcess) -> dict[str, str]:
    try:
        return checks(server)
    except httpx.HTTPError:
        return {}  # not listening yet


GATED = """
description = "Runs until its workspace holds a file named go."
command = ["sh", "-c", "while [ ! -e \\"$RUNYARD_WORKSPACE/go\\" ]; do sleep 0.02; done"]
"""
TRUE = 'command = ["true"]\nartifacts = []\n'
PROGRESS = """
command = ["sh", "-c", "echo '{{\\"fraction\\": 0.5}}' >> \\"$RUNYARD_PROGRESS_FILE\\""]
"""


@pytest.fixture
def gated_jobs(write_job, jobs_dir: Path) -> Path:
    write_job("gated", GATED)
    write_job("true", TRUE)
    write_job("progress", PROGRESS)
    return jobs_dir


def test_run_ending_while_exit_file_store_and_supervisor_log_fail(
    start_server, gated_jobs: Path
) -> None:
    """Defect 3 by failpoints: the end can be written nowhere; the supervisor survives its own
    log failing, keeps the record, and once the fault clears the run ends as it really did."""
    server = start_server(gated_jobs, env=ARMED)
    with server.client() as c:
        run_id = submit(server, "gated")
        wait_for(lambda: processes_of(server.data_dir), what="program running")
        sup = supervisor_pid(server)
        set_faults(server, "store_commit=enospc,exit_file=enospc,supervisor_log=eio")
        (server.data_dir / "runs" / run_id / "workspace" / "go").touch()
        wait_for(lambda: not processes_of(server.data_dir), what="program ended")
        # its end cannot be recorded anywhere: readiness says so, reads keep working
        wait_for(lambda: {"exit_file", "store"} <= checks(server).keys(), what="not ready")
        assert "No space left on device" in checks(server)["exit_file"]
        assert c.run(run_id).state is RunState.RUNNING
        assert not (server.data_dir / "runs" / run_id / "attempt-1.exit.json").exists()
        assert web.post(f"{server.url}/v1/runs", json={"job": "true"}).status_code == 507
        set_faults(server, "")
        done = server.wait_run(c, run_id)
        assert done.state is RunState.SUCCEEDED, done.reason
        assert (server.data_dir / "runs" / run_id / "attempt-1.exit.json").exists()
        assert supervisor_pid(server) == sup  # it never died
    ready_again(server)
    queue_moves(server)


def test_an_end_heard_while_the_store_fails_and_its_exit_file_cannot_be_written_is_recorded(
    start_server, gated_jobs: Path
) -> None:
    """An attacker's probe: the exit file refused for good (EACCES, or a directory a program
    put in its place: never retried) while the store refused the end the supervisor told of.
    The run stayed `running` with no program, holding its slot, readiness 200, until a
    restart called it lost. The end heard is kept and recorded once the store takes writes."""
    server = start_server(gated_jobs, env=ARMED)
    with server.client() as c:
        run_id = submit(server, "gated")
        wait_for(lambda: processes_of(server.data_dir), what="program running")
        set_faults(server, "store_commit=enospc,exit_file=eacces")
        (server.data_dir / "runs" / run_id / "workspace" / "go").touch()
        wait_for(lambda: not processes_of(server.data_dir), what="program ended")
        wait_for(lambda: "reconcile" in checks(server), what="readiness to say it")
        assert c.run(run_id).state is RunState.RUNNING
        set_faults(server, "")
        done = server.wait_run(c, run_id)
        assert done.state is RunState.SUCCEEDED, done.reason  # as it ended: exit 0, not lost
        assert done.exit_code == 0
        assert not (server.data_dir / "runs" / run_id / "attempt-1.exit.json").exists()
    ready_again(server)
    queue_moves(server)


@pytest.mark.parametrize(
    ("point", "fault", "cause", "says"),
    [
        ("log", "eio", "Input/output error", "cannot open the attempt's log"),
        ("workspace", "enospc", "No space left on device", "cannot prepare the workspace"),
    ],
)
def test_launch_write_shortage_requeues_the_run_until_it_clears(
    start_server, gated_jobs: Path, point: str, fault: str, cause: str, says: str
) -> None:
    """A disk full or failing when a run is prepared is the machine's fault, not the run's:
    nothing started, so the run waits in the queue (readiness naming the point) and runs
    once the disk does, whatever its retry policy (it has none here)."""
    server = start_server(gated_jobs, env=ARMED)
    sup = supervisor_pid(server)
    set_faults(server, f"{point}={fault}")
    with server.client() as c:
        run_id = submit(server, "true")
        wait_for(lambda: c.run(run_id).attempt >= 2, what="the run tried again")
        run = c.run(run_id)
        assert run.state in {RunState.QUEUED, RunState.RUNNING}
        assert f"not started: {says}" in (run.reason or "")
        assert cause in (run.reason or "")
        wait_for(lambda: point in checks(server), what=f"readiness to name {point}")
        assert cause in checks(server)[point]
        set_faults(server, "")
        done = server.wait_run(c, run_id)
    assert done.state is RunState.SUCCEEDED, done.reason
    ready_again(server)
    queue_moves(server)
    assert supervisor_pid(server) == sup


def test_a_copied_workspace_the_disk_refuses_requeues_the_run(
    start_server, write_job, jobs_dir: Path
) -> None:
    """The same for a workspace the server copies itself (`copy:DIR`), before the spawn."""
    (jobs_dir / "tree").mkdir()
    (jobs_dir / "tree" / "data.txt").write_text("x")
    write_job("copied", 'command = ["cat", "data.txt"]\nworkspace = "copy:tree"\n')
    server = start_server(jobs_dir, env=ARMED)
    set_faults(server, "workspace=enospc")
    with server.client() as c:
        run_id = submit(server, "copied")
        wait_for(lambda: c.run(run_id).attempt >= 2, what="the run tried again")
        assert "not started: workspace: " in (c.run(run_id).reason or "")
        assert "No space left on device" in (c.run(run_id).reason or "")
        wait_for(lambda: "workspace" in checks(server), what="readiness to name the workspace")
        assert "No space left on device" in checks(server)["workspace"]
        set_faults(server, "")
        done = server.wait_run(c, run_id)
    assert done.state is RunState.SUCCEEDED, done.reason
    ready_again(server)


def test_launch_write_refusal_fails_the_run_naming_it(start_server, gated_jobs: Path) -> None:
    """A place refused for good (a permission) is no shortage: the run fails naming it."""
    server = start_server(gated_jobs, env=ARMED)
    set_faults(server, "workspace=eacces")
    with server.client() as c:
        done = server.wait_run(c, submit(server, "true"))
    assert done.state is RunState.FAILED
    assert "cannot prepare the workspace" in (done.reason or "")
    assert "Permission denied" in (done.reason or "")
    set_faults(server, "")
    ready_again(server)
    queue_moves(server)


def test_progress_write_fault_keeps_the_run_and_clears(start_server, gated_jobs: Path) -> None:
    server = start_server(gated_jobs, env=ARMED)
    set_faults(server, "progress=enospc")
    with server.client() as c:
        done = server.wait_run(c, submit(server, "progress"))
        assert done.state is RunState.SUCCEEDED  # progress is a view: the run is unharmed
        wait_for(lambda: "store" in checks(server), what="readiness to name the store")
        assert "No space left on device" in checks(server)["store"]
        set_faults(server, "")
        ready_again(server)
        queue_moves(server)


@pytest.mark.leaks_allowed("the PostgreSQL pool may keep a connection it grew to (idle 10 min)")
def test_store_commit_fault_on_postgresql(database: str, start_server) -> None:
    """The same on PostgreSQL: 507 naming the cause, reads answered, readiness, recovery.
    (`database` first: it must outlive the server, whose leak check runs at teardown.)"""
    server = start_server(env={**ARMED, "RUNYARD_DATABASE_URL": database})
    set_faults(server, "store_commit=enospc")
    resp = web.post(f"{server.url}/v1/runs", json={"job": "true"})
    assert resp.status_code == 507
    assert "No space left on device" in resp.json()["detail"]
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []
    wait_for(lambda: "store" in checks(server), what="readiness to name the store")
    set_faults(server, "")
    ready_again(server)
    queue_moves(server)
