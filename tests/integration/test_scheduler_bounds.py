"""The scheduler's bounds, in-process against the real store: a burst of due schedules fires
at most MAX_FIRES_PER_TICK per tick (the rest at the next tick), and a stored schedule whose
timing cannot give a next fire stops firing instead of spinning the loop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runyard.scheduling.scheduler import MAX_FIRES_PER_TICK
from tests.inprocess import InProcessServer, serving
from tests.support import wait_for


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "tick.toml").write_text('command = ["true"]\n')
    (jobs / "text.toml").write_text(
        'command = ["echo", "{note}"]\n[params.note]\ntype = "str"\nmax_length = 1000000\n'
    )
    with serving(tmp_path, jobs) as srv:
        yield srv


def fires(server: InProcessServer) -> int:
    return sum(
        s["fire_count"]
        for s in server.get("/v1/schedules", params={"limit": 500}).json()["schedules"]
    )


def test_a_burst_of_due_schedules_fires_in_bounded_ticks(server: InProcessServer) -> None:
    total = MAX_FIRES_PER_TICK + 20
    for _ in range(total):
        resp = server.post(
            "/v1/schedules", json={"job": "tick", "interval_s": 3600, "paused": True}
        )
        assert resp.status_code == 201
    scheduler = server.app.state.runtime.scheduler

    async def one_tick() -> None:
        async with scheduler._lock:
            now = scheduler.clock.now()
            for s in scheduler.schedules.values():  # all due at once, e.g. after a restart
                s.paused, s.next_fire_at = False, now - 1
            await scheduler._tick()

    server.call(one_tick())
    assert fires(server) == MAX_FIRES_PER_TICK  # one tick: the bound, not the whole burst
    scheduler._wake.set()  # the loop's next tick takes the rest
    wait_for(lambda: fires(server) == total, timeout=20, what="the rest to fire")


def test_a_stored_cron_that_never_fires_is_not_due_again(server: InProcessServer) -> None:
    resp = server.post("/v1/schedules", json={"job": "tick", "cron": "0 0 * * *", "paused": True})
    scheduler = server.app.state.runtime.scheduler

    async def break_it() -> None:
        async with scheduler._lock:
            s = scheduler.schedules[resp.json()["id"]]
            # a row written before the bounds existed: a cron that can never match
            s.cron, s.paused, s.next_fire_at = "0 0 30 2 *", False, scheduler.clock.now() - 1
            await scheduler._tick()

    server.call(break_it())
    got = server.get(f"/v1/schedules/{resp.json()['id']}").json()
    assert got["next_fire_at"] is None  # never due again: no tick loop spinning on it
    assert got["fire_count"] == 1


def test_the_list_of_schedules_comes_in_bounded_pages(server: InProcessServer) -> None:
    """It came whole: up to max_schedules schedules of up to a request's size each."""
    made = [
        server.post(
            "/v1/schedules", json={"job": "tick", "interval_s": 3600, "paused": True}
        ).json()["id"]
        for _ in range(7)
    ]
    seen: list[str] = []
    cursor = None
    pages = []
    while True:
        resp = server.get(
            "/v1/schedules", params={"limit": 3, **({"cursor": cursor} if cursor else {})}
        )
        assert resp.status_code == 200, resp.text
        page = resp.json()
        pages.append(len(page["schedules"]))
        seen += [s["id"] for s in page["schedules"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [3, 3, 1]
    assert seen == sorted(made)  # oldest first, each once
    for bad in ({"limit": 0}, {"limit": 501}, {"cursor": "../x"}):
        resp = server.get("/v1/schedules", params=bad)
        assert resp.status_code == 422, (bad, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")


def test_a_schedules_params_are_bounded_as_it_is_held_in_memory(server: InProcessServer) -> None:
    """A thousand schedules of a 1 MiB body each were held in the server's memory: a GB."""
    from runyard.scheduling.requests import MAX_SCHEDULE_PARAMS_BYTES

    body = {"job": "text", "interval_s": 3600, "paused": True}
    big = server.post("/v1/schedules", json={**body, "params": {"note": "x" * 70_000}})
    assert big.status_code == 422, big.text
    problem = big.json()
    assert problem["limit"] == MAX_SCHEDULE_PARAMS_BYTES
    assert "params" in (problem.get("field") or "") and "KiB" in problem["detail"]
    assert server.get("/v1/schedules").json()["schedules"] == []  # nothing held
    ok = server.post("/v1/schedules", json={**body, "params": {"note": "x" * 60_000}})
    assert ok.status_code == 201, ok.text
    patched = server.request(
        "PATCH", f"/v1/schedules/{ok.json()['id']}", json={"params": {"note": "y" * 70_000}}
    )
    assert patched.status_code == 422, patched.text
    assert server.get(f"/v1/schedules/{ok.json()['id']}").json()["params"]["note"] == "x" * 60_000
    run = server.post("/v1/runs", json={"job": "text", "params": {"note": "x" * 70_000}})
    assert run.status_code in {201, 202}, run.text  # a run's params live in the store
