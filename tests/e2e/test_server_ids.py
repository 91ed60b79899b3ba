"""A server id is one process's at a time (a probe: a second process started under a live
member's id was handed its lease, declared the member's programs lost, and then both
claimed runs under one id, and relays to that id went to whichever had registered last,
which served another's logs as empty). A second one is refused; a restart of the same one
(its host and data directory) rejoins within its lease and adopts its programs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import web
from tests.support import free_port, wait_for

pytestmark = pytest.mark.e2e


def test_a_second_process_under_a_live_members_id_is_refused(
    start_server, write_job, jobs_dir: Path, database: str, tmp_path: Path
) -> None:
    write_job("long", 'command = ["sleep", "600"]\n')
    env = {"RUNYARD_DATABASE_URL": database, "RUNYARD_SERVER_ID": "a", "RUNYARD_LEASE_S": "30"}
    a = start_server(jobs_dir, capacity=2, data_dir=tmp_path / "a", env=env)
    run_id = web.post(f"{a.url}/v1/runs", json={"job": "long"}).json()["id"]
    wait_for(lambda: web.get(f"{a.url}/v1/runs/{run_id}").json()["state"] == "running",
             what="the run to start on a")  # fmt: skip

    twin = subprocess.run(
        [sys.executable, "-m", "runyard", "serve", "--jobs", str(jobs_dir),
         "--data-dir", str(tmp_path / "twin"), "--port", str(free_port())],
        env={**os.environ, **env, "RUNYARD_LOG_FORMAT": "json"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert twin.returncode == 2  # a refusal, as every other one (a probe: 3, after uvicorn's
    # traceback of the lifespan and "Application startup failed")
    assert "refusing_to_start" in twin.stdout + twin.stderr
    assert "held by another live process" in twin.stdout + twin.stderr
    assert "Traceback" not in twin.stdout + twin.stderr
    assert "startup failed" not in twin.stdout + twin.stderr
    run = web.get(f"{a.url}/v1/runs/{run_id}").json()
    assert (run["state"], run["attempt"]) == ("running", 1)  # untouched, not lost

    # the same member killed and started again at once: its own id, within its lease
    assert a.proc is not None
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(30)
    again = start_server(jobs_dir, capacity=2, data_dir=tmp_path / "a", env=env)
    run = web.get(f"{again.url}/v1/runs/{run_id}").json()
    assert (run["state"], run["attempt"]) == ("running", 1)  # adopted
    web.post(f"{again.url}/v1/runs/{run_id}/cancel")
    wait_for(lambda: web.get(f"{again.url}/v1/runs/{run_id}").json()["state"] == "cancelled",
             what="the run cancelled")  # fmt: skip
