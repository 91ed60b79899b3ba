"""Admission with real programs: a sweep's runs and their output, Prefer: wait for a slot and
a client that leaves. Priorities, queue depth, fairness, batch refusals and cancel, and
Prefer: wait's answers are in tests/integration/test_dispatch_inprocess.py."""

from __future__ import annotations

import asyncio
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
    "capped": 'command = ["sleep", "60"]\nkill_grace_s = 0\nconcurrency = 1\nmax_queue = 5\n',
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


def test_submits_and_batches_at_once_never_pass_max_queue(start_server, jobs) -> None:
    """A probe: fifty submits at once each counted an empty queue before any was stored, and
    15 runs queued past a max_queue of 5 (batches too). Runs admitted are held against the
    limit until stored: never more queued than it, every other request a 429."""
    server = start_server(jobs)
    runs = f"{server.url}/v1/runs"
    first = web.post(runs, json={"job": "capped"}).json()["id"]
    wait_for(lambda: web.get(f"{runs}/{first}").json()["state"] == "running", what="running")

    async def burst() -> list[int]:
        async with web.AsyncClient(timeout=60) as client:
            singles = [client.post(runs, json={"job": "capped"}) for _ in range(30)]
            batches = [
                client.post(f"{server.url}/v1/batches", json={"job": "capped", "iterations": 2})
                for _ in range(15)
            ]
            answers = await asyncio.gather(*singles, *batches)
        return [a.status_code for a in answers]

    statuses = asyncio.run(burst())
    assert set(statuses) <= {201, 202, 429}, statuses
    assert 429 in statuses
    queued = web.get(f"{runs}?job=capped&state=queued&limit=100").json()["runs"]
    assert 1 <= len(queued) <= 5, len(queued)
    for run in [*queued, {"id": first}]:
        web.post(f"{runs}/{run['id']}/cancel")
