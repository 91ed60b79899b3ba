"""A second `runyard serve` on the data directory of a running one (a restart that did not
wait for the old process, a unit started twice): the newer takes the server id over, the
older claims nothing more and says so in its readiness, and a run the older started goes on
to its end once, adopted by the newer through their shared supervisor. Real processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.models import RunState
from tests import web
from tests.support import open_gate, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def jobs(write_job, jobs_dir: Path) -> Path:
    write_job("gate", 'command = ["sh", "-c", "while [ ! -e go ]; do sleep 0.05; done"]\n')
    return jobs_dir


def test_a_second_server_on_the_same_data_dir_takes_over_and_the_first_stands_by(
    start_server, jobs
) -> None:
    env = {"RUNYARD_LEASE_S": "3"}
    first = start_server(jobs, env=env)
    with first.client() as c:
        run = c.submit("gate")
        wait_for(lambda: c.run(run.id).state is RunState.RUNNING, what="running on the first")
    second = start_server(jobs, data_dir=first.data_dir, env=env)

    def stood_by() -> bool:
        ready = web.get(f"{first.url}/health/ready", timeout=10)
        return ready.status_code == 503 and "taken over" in ready.text

    wait_for(stood_by, what="the first to stand by")
    assert web.get(f"{second.url}/health/ready", timeout=10).status_code == 200
    open_gate(first.data_dir, run.id)  # its program ends
    with second.client() as c:
        done = second.wait_run(c, run.id)
        assert done.state is RunState.SUCCEEDED, done
        assert len(done.attempts or []) == 1  # adopted, never retried beside itself
