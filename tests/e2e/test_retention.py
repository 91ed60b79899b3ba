"""Retention removes finished runs after their TTL and never touches an active one."""

from __future__ import annotations

import sys

import pytest

from runyard.models import RunState
from tests import web
from tests.support import wait_for

pytestmark = pytest.mark.e2e


def test_expired_runs_go_active_and_unexpired_stay(start_server, write_job, jobs_dir) -> None:
    write_job("brief", 'command = ["sleep", "{s}"]\nretention_s = 1\n[params.s]\ntype = "float"\n')
    write_job("kept", 'command = ["true"]\n')
    server = start_server(jobs_dir, env={"RUNYARD_RETENTION_INTERVAL_S": "0.5"})
    with server.client() as c:
        short = c.submit("brief", {"s": 0})
        active = c.submit("brief", {"s": 60})
        other = c.submit("kept")
        server.wait_run(c, short.id)
        server.wait_run(c, other.id)
        wait_for(lambda: web.get(f"{server.url}/v1/runs/{short.id}").status_code == 404,
                 timeout=15, what="expired run removed")  # fmt: skip
        assert not (server.data_dir / "runs" / short.id).exists()
        assert c.run(active.id).state is RunState.RUNNING  # active: never touched
        assert (server.data_dir / "runs" / active.id / "workspace").is_dir()
        assert c.run(other.id).state is RunState.SUCCEEDED  # no TTL: kept
        c.cancel(active.id)


DEEP = """
import os
os.makedirs("outputs", exist_ok=True)
os.chdir("outputs")
for _ in range(1200):  # deeper than Python's recursion limit, longer than PATH_MAX
    os.mkdir("d" * 100)
    os.chdir("d" * 100)
open("leaf.txt", "w").close()
"""


def test_retention_removes_trees_of_any_depth(
    deep_trees, start_server, write_job, jobs_dir, tmp_path
):
    """It removed the record first and then failed on the files, leaving them for good."""
    script = tmp_path / "deep.py"
    script.write_text(DEEP)
    write_job("deep", f'command = ["{sys.executable}", "{script}"]\nretention_s = 1\n')
    server = start_server(jobs_dir, env={"RUNYARD_RETENTION_INTERVAL_S": "0.5"})
    with server.client() as c:
        run = server.wait_run(c, c.submit("deep").id)
        assert run.state is RunState.SUCCEEDED
        files = server.data_dir / "runs" / run.id
        wait_for(lambda: not files.exists(), timeout=30, what="the deep tree removed")
        wait_for(lambda: web.get(f"{server.url}/v1/runs/{run.id}").status_code == 404,
                 what="the record removed")  # fmt: skip


def test_a_removed_jobs_runs_expire_by_the_ttl_they_were_run_with(
    start_server, write_job, jobs_dir
) -> None:
    """A run's TTL is its job's as the run stored it: the sweep took its bound from the jobs
    declared now, so the runs of a job removed since were kept for good when no other job and
    not the server had a TTL."""
    write_job("brief", 'command = ["true"]\nretention_s = 3\n')
    write_job("kept", 'command = ["true"]\n')
    server = start_server(jobs_dir, env={"RUNYARD_RETENTION_INTERVAL_S": "0.5"})
    with server.client() as c:
        runs = [c.submit(job) for job in ("brief", "kept")]
        brief, kept = (server.wait_run(c, r.id) for r in runs)
        (jobs_dir / "brief.toml").unlink()  # gone from the jobs (a rescan: 1 s) before it expires
        wait_for(lambda: web.get(f"{server.url}/v1/runs/{brief.id}").status_code == 404,
                 timeout=15, what="the removed job's run removed")  # fmt: skip
        assert c.run(kept.id).state is RunState.SUCCEEDED  # no TTL: kept
