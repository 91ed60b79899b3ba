"""Schedules against a real server: a consistent health view while they fire. Firing on the
grid, overlap, pause, catch-up and refusals are in tests/integration/test_schedules_inprocess.py."""

from __future__ import annotations

import threading

import pytest

from tests import web
from tests.support import wait_for

pytestmark = pytest.mark.e2e

JOBS = {
    "tick": 'command = ["true"]\n',
}


@pytest.fixture
def server(start_server, write_job, jobs_dir):
    for name, text in JOBS.items():
        write_job(name, text)
    # sub-second intervals keep these tests short; the default minimum is 1 s
    return start_server(jobs_dir, env={"RUNYARD_SCHEDULE_MIN_INTERVAL_S": "0.1"})


def create(server, **body) -> dict:
    resp = web.post(f"{server.url}/v1/schedules", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def get(server, sid: str) -> dict:
    return web.get(f"{server.url}/v1/schedules/{sid}").json()


def runs_of(server, sid: str) -> list[dict]:
    runs = web.get(f"{server.url}/v1/runs", params={"limit": 500}).json()["runs"]
    return sorted((r for r in runs if r["schedule_id"] == sid), key=lambda r: r["id"])


def test_health_readers_always_see_a_consistent_scheduler_snapshot(server) -> None:
    scheds = [create(server, job="tick", interval_s=0.2) for _ in range(3)]
    problems: list[str] = []
    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        with web.Client(base_url=server.url) as http:
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
    # churn, and the readers shown enough of it: on a loaded machine the schedules can reach
    # their count before the readers have seen many snapshots (the check is on what they saw)
    wait_for(
        lambda: all(get(server, s["id"])["fire_count"] >= 8 for s in scheds) and len(seen) > 20,
        timeout=30, what="churn seen by the readers",
    )  # fmt: skip
    stop.set()
    for t in readers:
        t.join()
    assert problems == []
    snap = web.get(f"{server.url}/health").json()["scheduler"]
    assert snap["status"] == "running"
    assert snap["ticks"] >= 8
