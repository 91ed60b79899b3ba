"""A store that lost writes it had committed (here: the database put back to a copy taken
earlier, as a torn WAL with fsync off leaves it) is caught by what its run directories know:
a run directory the store does not have is reported in the log and `/v1/status`, and a run
that the store sends round again as an attempt whose files already exist gets fresh files,
the old ones set aside under a `.stale-` name (a probe: the new attempt's log went on from
the forgotten one's, and its exit file stood beside the new program as if its record)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests import web
from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.e2e


def state(server: ServerProcess, run_id: str) -> str:
    return str(web.get(f"{server.url}/v1/runs/{run_id}").json()["state"])


def submit(server: ServerProcess, job: str) -> str:
    return str(web.post(f"{server.url}/v1/runs", json={"job": job}).json()["id"])


def logged(server: ServerProcess, event: str) -> list[dict[str, object]]:
    lines = server.log_path.read_text().splitlines()
    return [e for e in (json.loads(x) for x in lines if x.startswith("{")) if e["event"] == event]


def test_a_store_put_back_to_an_earlier_copy_is_reported_and_runs_again_on_fresh_files(
    start_server, write_job, jobs_dir: Path, tmp_path: Path
) -> None:
    write_job("blocker", 'command = ["sleep", "600"]\n')
    write_job("quick", 'command = ["sh", "-c", "echo life $(date +%s%N)"]\n')
    data = tmp_path / "data"
    server = start_server(jobs_dir, capacity=1, data_dir=data)
    blocker = submit(server, "blocker")
    wait_for(lambda: state(server, blocker) == "running", what="the blocker to run")
    again = submit(server, "quick")  # queued behind the blocker
    # the copy the store will be put back to: `again` queued, nothing of it run yet
    copy = tmp_path / "copy.db"
    with sqlite3.connect(data / "runyard.db") as live, sqlite3.connect(copy) as snapshot:
        live.backup(snapshot)
    web.post(f"{server.url}/v1/runs/{blocker}/cancel")
    wait_for(lambda: state(server, again) == "succeeded", what="the queued run to run")
    forgotten = submit(server, "quick")
    wait_for(lambda: state(server, forgotten) == "succeeded", what="a run the store will lose")
    first_life = (data / "runs" / again / "attempt-1.log").read_bytes()
    server.stop()

    (data / "runyard.db").write_bytes(copy.read_bytes())
    for suffix in ("-wal", "-shm"):
        (data / f"runyard.db{suffix}").unlink(missing_ok=True)
    server = start_server(jobs_dir, capacity=1, data_dir=data)
    # the store has `again` queued (no attempt), its first attempt's files are on disk
    wait_for(lambda: state(server, again) == "succeeded", what="the run to run again")
    runs = data / "runs" / again
    log = (runs / "attempt-1.log").read_bytes()
    assert log.startswith(b"life ") and log.count(b"\n") == 1  # its own output alone
    assert log != first_life
    stale = sorted(p.name for p in runs.iterdir() if ".stale-" in p.name)
    assert [name.split(".stale-")[0] for name in stale] == ["attempt-1.exit.json", "attempt-1.log"]
    assert (runs / stale[1]).read_bytes() == first_life  # set aside, not lost
    assert logged(server, "stale_attempt_files_set_aside")

    # the run the store lost altogether: its directory is reported, and still there
    assert web.get(f"{server.url}/v1/runs/{forgotten}").status_code == 404
    audit = wait_for(
        lambda: (
            (a := web.get(f"{server.url}/v1/status").json()["store"]["file_audit"])["done"] and a
        ),
        what="the audit of the run directories",
    )
    assert audit["unknown_runs"] == 1 and forgotten in audit["examples"]
    assert audit["error"] is None
    (warning,) = logged(server, "store_behind_files")
    assert warning["unknown_runs"] == 1
    assert (data / "runs" / forgotten / "attempt-1.log").exists()
