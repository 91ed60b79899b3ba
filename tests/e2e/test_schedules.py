"""Schedules against a real server: firing, overlap, pause, and a consistent health view."""

from __future__ import annotations

import itertools
import threading

import httpx
import pytest

from runyard.models import RunState
from tests.support import wait_for

pytestmark = pytest.mark.e2e

JOBS = {
    "tick": 'command = ["true"]\n',
    "slow": 'command = ["sleep", "2.5"]\n',
    "echo": 'command = ["echo", "{n}"]\n[params.n]\ntype = "int"\nmax = 10\n',
}


@pytest.fixture
def server(start_server, write_job, jobs_dir):
    for name, text in JOBS.items():
        write_job(name, text)
    # sub-second intervals keep these tests short; the default minimum is 1 s
    return start_server(jobs_dir, env={"RUNYARD_SCHEDULE_MIN_INTERVAL_S": "0.1"})


def create(server, **body) -> dict:
    resp = httpx.post(f"{server.url}/v1/schedules", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def get(server, sid: str) -> dict:
    return httpx.get(f"{server.url}/v1/schedules/{sid}").json()


def runs_of(server, sid: str) -> list[dict]:
    runs = httpx.get(f"{server.url}/v1/runs", params={"limit": 500}).json()["runs"]
    return sorted((r for r in runs if r["schedule_id"] == sid), key=lambda r: r["id"])


def test_every_second_fires_once_per_second(server) -> None:
    sched = create(server, job="tick", interval_s=1)
    wait_for(lambda: get(server, sched["id"])["fire_count"] >= 3, timeout=10, what="3 fires")
    httpx.patch(f"{server.url}/v1/schedules/{sched['id']}", json={"paused": True})
    s = get(server, sched["id"])
    assert len(runs_of(server, sched["id"])) == s["fire_count"]  # each fire made one run
    from datetime import datetime

    created = datetime.fromisoformat(s["created_at"]).timestamp()
    nxt = (datetime.fromisoformat(s["next_fire_at"]).timestamp() - created) / 1.0
    assert abs(nxt - round(nxt)) < 1e-3  # fires stay on the one-second grid, never drift


def test_skip_never_overlaps(server) -> None:
    sched = create(server, job="slow", interval_s=1, overlap="skip")
    wait_for(lambda: get(server, sched["id"])["fire_count"] >= 2, timeout=15, what="2 fires")
    s = get(server, sched["id"])
    httpx.patch(f"{server.url}/v1/schedules/{sched['id']}", json={"paused": True})
    assert s["skip_count"] >= 1
    with server.client() as c:
        done = [server.wait_run(c, r["id"]) for r in runs_of(server, sched["id"])]
    spans = sorted((r.attempts[0].started_at, r.attempts[0].ended_at) for r in done)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start  # never two at once


def test_pause_stops_firing_and_resume_restarts(server) -> None:
    sched = create(server, job="tick", interval_s=0.5)
    wait_for(lambda: get(server, sched["id"])["fire_count"] >= 1, timeout=10, what="a fire")
    paused = httpx.patch(f"{server.url}/v1/schedules/{sched['id']}", json={"paused": True}).json()
    assert paused["paused"] is True
    count = get(server, sched["id"])["fire_count"]
    with pytest.raises(AssertionError):  # nothing fires while paused
        wait_for(lambda: get(server, sched["id"])["fire_count"] > count, timeout=2, what="x")
    httpx.patch(f"{server.url}/v1/schedules/{sched['id']}", json={"paused": False})
    wait_for(lambda: get(server, sched["id"])["fire_count"] > count, timeout=10, what="resumed")


def test_bad_schedules_are_refused(server) -> None:
    for body, field in (
        ({"job": "tick", "cron": "not cron"}, "cron"),
        ({"job": "tick"}, "cron"),
        ({"job": "tick", "cron": "* * * * *", "interval_s": 5}, "cron"),
        ({"job": "echo", "interval_s": 5, "params": {"n": 99}}, "params.n"),
        ({"job": "tick", "interval_s": 5, "overlap": "sometimes"}, "overlap"),
    ):
        resp = httpx.post(f"{server.url}/v1/schedules", json=body)
        assert resp.status_code == 422, body
        assert field in resp.json()["detail"]
    assert (
        httpx.post(f"{server.url}/v1/schedules", json={"job": "nope", "interval_s": 1}).status_code
        == 404
    )
    assert httpx.get(f"{server.url}/v1/schedules").json() == []
    cron = create(server, job="tick", cron="*/5 * * * *")
    assert cron["next_fire_at"] is not None
    assert httpx.delete(f"{server.url}/v1/schedules/{cron['id']}").status_code == 204
    assert httpx.get(f"{server.url}/v1/schedules/{cron['id']}").status_code == 404


def test_health_readers_always_see_a_consistent_scheduler_snapshot(server) -> None:
    scheds = [create(server, job="tick", interval_s=0.2) for _ in range(3)]
    problems: list[str] = []
    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        with httpx.Client(base_url=server.url) as http:
            while not stop.is_set():
                snap = http.get("/health").json()["scheduler"]
                for s in snap["schedules"]:
                    if s["fire_count"] == 0:
                        continue
                    runs = runs_of(server, s["id"])
                    # the snapshot's last run is exactly its fire_count-th run
                    if (
                        len(runs) < s["fire_count"]
                        or runs[s["fire_count"] - 1]["id"] != s["last_run_id"]
                    ):
                        problems.append(f"{s['id']}: {s['fire_count']} vs {s['last_run_id']}")
                    seen.append(s["fire_count"])

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    wait_for(lambda: all(get(server, s["id"])["fire_count"] >= 8 for s in scheds), timeout=20,
             what="churn")  # fmt: skip
    stop.set()
    for t in readers:
        t.join()
    assert problems == []
    assert len(seen) > 20
    snap = httpx.get(f"{server.url}/health").json()["scheduler"]
    assert snap["status"] == "running"
    assert snap["ticks"] >= 8


def test_queue_overlap_defers_one_fire(server) -> None:
    sched = create(server, job="slow", interval_s=0.5, overlap="queue")
    wait_for(lambda: get(server, sched["id"])["fire_count"] >= 2, timeout=15, what="2 fires")
    httpx.patch(f"{server.url}/v1/schedules/{sched['id']}", json={"paused": True})
    with server.client() as c:
        done = [server.wait_run(c, r["id"]) for r in runs_of(server, sched["id"])]
    assert all(r.state is RunState.SUCCEEDED for r in done)
    spans = sorted((r.attempts[0].started_at, r.attempts[0].ended_at) for r in done)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start  # queued behind the previous one, never beside it
