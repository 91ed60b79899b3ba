"""Admission and batches: priorities, queue depth, fairness between jobs, sweeps, Prefer: wait."""

from __future__ import annotations

import itertools

import httpx
import pytest

from runyard.client import APIError
from runyard.models import RunState
from tests.support import wait_for

pytestmark = pytest.mark.e2e

JOBS = {
    "hold": 'command = ["sleep", "{s}"]\nkill_grace_s = 0\n'
    '[params.s]\ntype = "float"\ndefault = 60\n',
    "mark": 'command = ["true"]\n',
    "limited": 'command = ["true"]\nmax_queue = 3\n',
    "flood": 'command = ["sleep", "60"]\nconcurrency = 1\nkill_grace_s = 0\n',
    "grid": 'command = ["echo", "{a}", "{b}"]\n[params.a]\ntype = "int"\n'
    '[params.b]\ntype = "int"\nmax = 100\n',
}


@pytest.fixture
def jobs(write_job, jobs_dir):
    for name, text in JOBS.items():
        write_job(name, text)
    return jobs_dir


def test_priority_then_fifo(start_server, jobs) -> None:
    server = start_server(jobs, capacity=1)
    with server.client() as c:
        holder = c.submit("hold")
        wait_for(lambda: c.run(holder.id).state is RunState.RUNNING, what="holder")
        order = [c.submit("mark", priority=p) for p in (0, 5, 5, 0, 9)]
        c.cancel(holder.id)
        done = [server.wait_run(c, r.id) for r in order]
    started = sorted(done, key=lambda r: r.started_at)
    assert [r.id for r in started] == [order[i].id for i in (4, 1, 2, 0, 3)]


def test_queue_full_answers_429_at_the_exact_depth(start_server, jobs) -> None:
    server = start_server(jobs, capacity=1, env={"RUNYARD_MAX_QUEUE": "5"})
    with server.client() as c:
        holder = c.submit("hold")
        wait_for(lambda: c.run(holder.id).state is RunState.RUNNING, what="holder")
        for _ in range(3):
            c.submit("limited")
        resp = httpx.post(f"{server.url}/v1/runs", json={"job": "limited"})
        assert resp.status_code == 429
        assert int(resp.headers["Retry-After"]) >= 1
        assert "max_queue (3)" in resp.json()["detail"]
        c.submit("mark")
        c.submit("mark")  # 5 queued in all: the server's max_queue
        resp = httpx.post(f"{server.url}/v1/runs", json={"job": "mark"})
        assert resp.status_code == 429
        assert "the server's max_queue (5)" in resp.json()["detail"]
        assert len(c.runs(state=RunState.QUEUED).runs) == 5  # nothing more was stored
        c.cancel(holder.id)


def test_flooded_job_does_not_block_another(start_server, jobs) -> None:
    server = start_server(jobs, capacity=2)
    with server.client() as c:
        flood = [c.submit("flood") for _ in range(20)]
        other = c.submit("mark")
        assert server.wait_run(c, other.id).state is RunState.SUCCEEDED
        assert len(c.runs(job="flood", state=RunState.QUEUED).runs) == 19
        for r in flood:
            c.cancel(r.id)


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


def test_invalid_sweep_element_creates_nothing(start_server, jobs) -> None:
    server = start_server(jobs)
    with server.client() as c:
        with pytest.raises(APIError) as info:
            c.batch("grid", sweep={"a": [1, 2, 3], "b": [10, 20, 999]})
        assert info.value.status == 422
        assert "params.b" in info.value.detail
        assert "no run was created" in info.value.detail
        assert c.runs().runs == []
        with pytest.raises(APIError) as both:
            c.batch("grid", {"a": 1, "b": 2}, iterations=2, sweep={"a": [1]})
        assert both.value.status == 422


def test_batch_too_large_is_refused(start_server, jobs) -> None:
    server = start_server(jobs, env={"RUNYARD_MAX_BATCH": "10"})
    with server.client() as c, pytest.raises(APIError) as info:
        c.batch("grid", sweep={"a": [1, 2, 3, 4], "b": [1, 2, 3]})
    assert "max_batch (10)" in info.value.detail


def test_batch_cancel_ends_all_of_its_runs(start_server, jobs) -> None:
    server = start_server(jobs, capacity=2)
    with server.client() as c:
        batch = c.batch("hold", iterations=5)
        wait_for(lambda: c.get_batch(batch.id).counts.get("running") == 2, what="two running")
        c.cancel_batch(batch.id)
        wait_for(lambda: c.get_batch(batch.id).done, what="all ended")
        assert c.get_batch(batch.id).counts == {"cancelled": 5}


def test_prefer_wait_answers_200_when_the_run_ends_in_time(start_server, jobs) -> None:
    server = start_server(jobs)
    resp = httpx.post(
        f"{server.url}/v1/runs", json={"job": "hold", "params": {"s": 0.5}},
        headers={"Prefer": "wait=10"}, timeout=30,
    )  # fmt: skip
    assert resp.status_code == 200
    assert resp.json()["state"] == "succeeded"
    assert resp.headers["Preference-Applied"] == "wait=10"


def test_prefer_wait_answers_202_when_it_does_not(start_server, jobs) -> None:
    server = start_server(jobs)
    resp = httpx.post(
        f"{server.url}/v1/runs", json={"job": "hold", "params": {"s": 30}},
        headers={"Prefer": "wait=1"}, timeout=30,
    )  # fmt: skip
    assert resp.status_code == 202
    assert resp.json()["state"] == "running"
    httpx.post(f"{server.url}/v1/runs/{resp.json()['id']}/cancel")


def test_prefer_wait_queues_for_a_slot_and_survives_a_disconnect(start_server, jobs) -> None:
    server = start_server(jobs, capacity=1)
    with server.client() as c:
        holder = c.submit("hold", {"s": 1.0})
        wait_for(lambda: c.run(holder.id).state is RunState.RUNNING, what="holder")
        waited = c.submit("mark", wait=20)  # capacity is full: it waits for the slot
        assert waited.state is RunState.SUCCEEDED
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/runs", json={"job": "hold", "params": {"s": 1.0}},
                       headers={"Prefer": "wait=10"}, timeout=0.3)  # fmt: skip
        (left,) = [r for r in c.runs(job="hold").runs if r.id != holder.id]
        assert server.wait_run(c, left.id).state is RunState.SUCCEEDED  # not cancelled
