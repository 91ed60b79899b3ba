"""Admission with real programs: a sweep's runs and their output, Prefer: wait for a slot and
a client that leaves. Priorities, queue depth, fairness, batch refusals and cancel, and
Prefer: wait's answers are in tests/integration/test_dispatch_inprocess.py."""

from __future__ import annotations

import itertools

import httpx
import pytest

from runyard.models import RunState
from tests import web
from tests.support import wait_for

pytestmark = pytest.mark.e2e

JOBS = {
    "hold": 'command = ["sleep", "{s}"]\nkill_grace_s = 0\n'
    '[params.s]\ntype = "float"\ndefault = 60\n',
    "mark": 'command = ["true"]\n',
    "grid": 'command = ["echo", "{a}", "{b}"]\n[params.a]\ntype = "int"\n'
    '[params.b]\ntype = "int"\nmax = 100\n',
}


@pytest.fixture
def jobs(write_job, jobs_dir):
    for name, text in JOBS.items():
        write_job(name, text)
    return jobs_dir


def test_sweep_creates_the_cartesian_product(start_server, jobs) -> None:
    server = start_server(jobs)
    with server.client() as c:
        batch = c.batch("grid", sweep={"a": [1, 2, 3], "b": [10, 20, 30, 40]})
        assert batch.size == 12
        runs = c.runs(batch=batch.id, limit=100).runs
        assert sorted((r.params["a"], r.params["b"]) for r in runs) == sorted(
            itertools.product([1, 2, 3], [10, 20, 30, 40])
        )
        wait_for(lambda: c.get_batch(batch.id).done, what="batch done")
        assert c.get_batch(batch.id).counts == {"succeeded": 12}
        logs = sorted(c.logs(r.id)[0] for r in runs)
        assert logs[0] == b"1 10\n"


def test_prefer_wait_queues_for_a_slot_and_survives_a_disconnect(start_server, jobs) -> None:
    server = start_server(jobs, capacity=1)
    with server.client() as c:
        holder = c.submit("hold", {"s": 1.0})
        wait_for(lambda: c.run(holder.id).state is RunState.RUNNING, what="holder")
        waited = c.submit("mark", wait=20)  # capacity is full: it waits for the slot
        assert waited.state is RunState.SUCCEEDED
        with pytest.raises(httpx.ReadTimeout):
            web.post(f"{server.url}/v1/runs", json={"job": "hold", "params": {"s": 1.0}},
                       headers={"Prefer": "wait=10"}, timeout=0.3)  # fmt: skip
        (left,) = [r for r in c.runs(job="hold").runs if r.id != holder.id]
        assert server.wait_run(c, left.id).state is RunState.SUCCEEDED  # not cancelled
