"""Storage faults are answered, not crashed on: busy database, full disk, damaged run files."""

from __future__ import annotations

import contextlib
import shutil
import signal
import sqlite3

import httpx
import pytest

from runyard.models import RunState
from tests import web
from tests.support import wait_for

pytestmark = pytest.mark.e2e


def test_busy_database_refuses_writes_with_503_while_reads_work(start_server) -> None:
    server = start_server(env={"RUNYARD_DB_BUSY_TIMEOUT_MS": "100"})
    with server.client() as c:
        run = server.wait_run(c, c.submit("true").id)
    locker = sqlite3.connect(server.data_dir / "runyard.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
    try:
        resp = web.post(f"{server.url}/v1/runs", json={"job": "true"})
        assert resp.status_code == 503
        assert resp.json()["type"] == "urn:runyard:problem:store-busy"
        assert "Retry-After" in resp.headers
        assert web.get(f"{server.url}/v1/runs/{run.id}").status_code == 200
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert web.post(f"{server.url}/v1/runs", json={"job": "true"}).status_code == 202


def test_low_disk_refuses_submissions_with_507_while_reads_work(start_server) -> None:
    # more than any disk has: up, but not ready for submissions (readiness names the disk)
    server = start_server(env={"RUNYARD_MIN_FREE_MB": str(2**40)}, health="/health/live")
    resp = web.post(f"{server.url}/v1/runs", json={"job": "true"})
    assert resp.status_code == 507
    assert "min_free_mb" in resp.json()["detail"]
    wait_for(lambda: "disk" in web.get(f"{server.url}/health/ready").json()["checks"])
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []  # nothing was created
    assert web.get(f"{server.url}/health/live").status_code == 200


def test_corrupt_exit_file_makes_the_attempt_lost_not_a_crash(start_server) -> None:
    server = start_server(env={"RUNYARD_FAILPOINTS": "before_end"})
    with contextlib.suppress(httpx.HTTPError):
        web.post(f"{server.url}/v1/runs", json={"job": "fail"}, headers={"Idempotency-Key": "x"})
    assert server.proc.wait(30) == -signal.SIGKILL
    (exit_file,) = server.data_dir.glob("runs/*/attempt-1.exit.json")
    exit_file.write_bytes(b"\x00garbage{")
    server = start_server()
    with server.client() as c:
        (run,) = c.runs().runs
        done = server.wait_run(c, run.id)
        assert done.state is RunState.FAILED
        assert (done.reason or "").startswith("lost")
        assert web.get(f"{server.url}/health/ready").status_code == 200


def test_missing_run_directory_is_answered(start_server) -> None:
    server = start_server()
    with server.client() as c:
        run = server.wait_run(c, c.submit("simulate", {"ticks": 10}).id)
        shutil.rmtree(server.data_dir / "runs" / run.id)
        assert c.run(run.id).state is RunState.SUCCEEDED
        assert c.logs(run.id)[0] == b""
        assert c.artifacts(run.id).artifacts == []
        resp = web.get(f"{server.url}/v1/runs/{run.id}/artifacts/outputs/result.json")
        assert resp.status_code == 404
        c.delete(run.id)  # deleting what is already gone works too
        wait_for(lambda: c.runs().runs == [], what="deleted")
