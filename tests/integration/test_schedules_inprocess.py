"""Schedules on a fake clock: firing on the grid, overlap (skip, queue, allow), pause and resume,
catch-up after downtime, and refusals — no wall-clock wait: the test moves the clock and wakes
the scheduler through the API (a PATCH), then waits for its tick to be published."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from runyard import failpoints
from tests.fakes import FakeClock
from tests.inprocess import FakedServer, faked
from tests.support import wait_for

JOBS = {
    "tick": 'command = ["true"]\n',
    "echo": 'command = ["echo", "{n}"]\n[params.n]\ntype = "int"\nmax = 10\n',
    "capped": 'command = ["true"]\nmax_queue = 1\nconcurrency = 1\n',
}
MINUTE = 60.0


@pytest.fixture
def jobs(write_job: Callable[[str, str], Path], jobs_dir: Path) -> Path:
    for name, text in JOBS.items():
        write_job(name, text)
    return jobs_dir


@pytest.fixture
def server(tmp_path: Path, jobs: Path) -> Iterator[FakedServer]:
    with faked(tmp_path, jobs) as srv:
        yield srv


def create(srv: FakedServer, **body: Any) -> dict[str, Any]:
    resp = srv.post("/v1/schedules", json=body)
    assert resp.status_code == 201, resp.text
    sched: dict[str, Any] = resp.json()
    return sched


def get(srv: FakedServer, sid: str) -> dict[str, Any]:
    sched: dict[str, Any] = srv.get(f"/v1/schedules/{sid}").json()
    return sched


def ticks(srv: FakedServer) -> int:
    return int(srv.get("/health").json()["scheduler"]["ticks"])


def tick(srv: FakedServer, sid: str, advance: float = 0.0) -> dict[str, Any]:
    """Move the clock, wake the scheduler (a PATCH that changes nothing wakes it), and wait
    until it has ticked at the new time; the schedule as it is then. A tick counted is not
    enough: one under way from before (an earlier PATCH woke it) may end first, at its time."""
    srv.clock.advance(advance)
    now = srv.clock.now()
    before = ticks(srv)
    overlap = get(srv, sid)["overlap"]
    assert srv.request("PATCH", f"/v1/schedules/{sid}", json={"overlap": overlap}).is_success

    def ticked_now() -> bool:
        scheduler = srv.get("/health").json()["scheduler"]
        return int(scheduler["ticks"]) > before and (scheduler["last_tick_at"] or 0.0) >= now

    wait_for(ticked_now, what="a scheduler tick at the new time")
    return get(srv, sid)


def runs_of(srv: FakedServer, sid: str) -> list[str]:
    runs = srv.get("/v1/runs", params={"limit": 500}).json()["runs"]
    return sorted(r["id"] for r in runs if r["schedule_id"] == sid)


def at(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def test_an_interval_fires_once_per_interval_on_its_grid(server: FakedServer) -> None:
    # overlap "allow": the fake executor's runs go on until told, and must not skip a fire
    sched = create(server, job="tick", interval_s=MINUTE, overlap="allow")
    sid, created = sched["id"], at(sched["created_at"])
    assert at(sched["next_fire_at"]) == pytest.approx(created + MINUTE, abs=0.01)
    assert tick(server, sid, MINUTE - 1)["fire_count"] == 0  # not yet
    assert tick(server, sid, 1.5)["fire_count"] == 1
    assert tick(server, sid, MINUTE / 2)["fire_count"] == 1
    s = tick(server, sid, MINUTE / 2)
    assert s["fire_count"] == 2
    assert len(runs_of(server, sid)) == 2  # each fire made one run
    steps = (at(s["next_fire_at"]) - created) / MINUTE
    assert steps == pytest.approx(round(steps), abs=1e-3)  # on the grid, never drifting


def test_skip_never_overlaps(server: FakedServer) -> None:
    sid = create(server, job="tick", interval_s=MINUTE, overlap="skip")["id"]
    assert tick(server, sid, MINUTE)["fire_count"] == 1
    (first,) = runs_of(server, sid)
    wait_for(lambda: server.launched() == [first], what="the first run to start")
    s = tick(server, sid, MINUTE)  # the first still runs: this fire is skipped
    assert (s["fire_count"], s["skip_count"]) == (1, 1)
    server.finish(first)
    wait_for(lambda: server.run(first)["state"] == "succeeded", what="the first to end")
    s = tick(server, sid, MINUTE)
    assert (s["fire_count"], s["skip_count"]) == (2, 1)
    assert len(runs_of(server, sid)) == 2


def test_queue_overlap_defers_one_fire_until_the_previous_run_ends(server: FakedServer) -> None:
    sid = create(server, job="tick", interval_s=MINUTE, overlap="queue")["id"]
    tick(server, sid, MINUTE)
    (first,) = runs_of(server, sid)
    wait_for(lambda: server.launched() == [first], what="the first run to start")
    assert tick(server, sid, MINUTE)["fire_count"] == 1  # deferred
    assert tick(server, sid, MINUTE)["fire_count"] == 1  # and coalesced: still one waiting
    server.finish(first)
    wait_for(lambda: len(runs_of(server, sid)) == 2, what="the deferred fire")
    second = next(r for r in runs_of(server, sid) if r != first)
    wait_for(lambda: server.launched() == [first, second], what="the deferred run to start")
    assert get(server, sid)["fire_count"] == 2
    assert len(server.executor.running_keys()) == 1  # behind the first, never beside it


def test_a_fire_waiting_for_the_previous_run_is_dropped_by_a_pause(server: FakedServer) -> None:
    """It fired when the previous run ended, paused or not (a probe)."""
    sid = create(server, job="tick", interval_s=MINUTE, overlap="queue")["id"]
    tick(server, sid, MINUTE)
    (first,) = runs_of(server, sid)
    wait_for(lambda: server.launched() == [first], what="the first run to start")
    tick(server, sid, MINUTE)  # deferred: waits for the first's end
    assert server.request("PATCH", f"/v1/schedules/{sid}", json={"paused": True}).is_success
    server.finish(first)
    wait_for(lambda: server.run(first)["state"] == "succeeded", what="the first to end")
    server.settle()
    assert runs_of(server, sid) == [first] and get(server, sid)["fire_count"] == 1


def test_a_new_interval_fires_on_the_schedules_grid(server: FakedServer) -> None:
    """The first fire after a change came at the change's time plus the interval, then the
    next on the grid from creation: two fires closer than the interval (a probe)."""
    sched = create(server, job="tick", interval_s=100.0, overlap="allow")
    sid, created = sched["id"], at(sched["created_at"])
    server.clock.advance(3.3)
    changed = server.request("PATCH", f"/v1/schedules/{sid}", json={"interval_s": 4.0}).json()
    nxt = at(changed["next_fire_at"])
    assert server.clock.now() < nxt <= server.clock.now() + 4.0
    assert (nxt - created) / 4.0 == pytest.approx(round((nxt - created) / 4.0), abs=1e-3)


def test_a_fire_is_admitted_as_a_submission_is(server: FakedServer) -> None:
    """Past the job's max_queue a fire is skipped; it queued runs without bound (a probe)."""
    sid = create(server, job="capped", interval_s=MINUTE, overlap="allow")["id"]
    tick(server, sid, MINUTE)
    wait_for(lambda: len(server.launched()) == 1, what="the first run to start")
    assert tick(server, sid, MINUTE)["fire_count"] == 2  # queued behind it: 1 of max_queue 1
    s = tick(server, sid, MINUTE)
    assert (s["fire_count"], s["skip_count"], s["fail_count"]) == (2, 0, 1)
    assert s["last_error"].startswith("refused: "), s["last_error"]
    assert len(runs_of(server, sid)) == 2


def test_allow_overlap_runs_side_by_side(server: FakedServer) -> None:
    sid = create(server, job="tick", interval_s=MINUTE, overlap="allow")["id"]
    tick(server, sid, MINUTE)
    assert tick(server, sid, MINUTE)["fire_count"] == 2
    wait_for(lambda: len(server.launched()) == 2, what="both runs to start")
    assert len(server.executor.running_keys()) == 2


def test_pause_stops_firing_and_resume_keeps_the_grid(server: FakedServer) -> None:
    sched = create(server, job="tick", interval_s=MINUTE, overlap="allow")
    sid, created = sched["id"], at(sched["created_at"])
    assert tick(server, sid, MINUTE)["fire_count"] == 1
    paused = server.request("PATCH", f"/v1/schedules/{sid}", json={"paused": True}).json()
    assert paused["paused"] is True
    # it fires nothing: no time it would (a probe: a stale one, soon in the past)
    assert paused["next_fire_at"] is None
    while_paused = tick(server, sid, 10 * MINUTE)
    assert while_paused["fire_count"] == 1  # nothing fires while paused
    assert while_paused["next_fire_at"] is None
    snapshot = server.get("/health").json()["scheduler"]["schedules"]
    assert [s["next_fire_at"] for s in snapshot if s["id"] == sid] == [None]  # as the API
    assert create(server, job="tick", interval_s=MINUTE, paused=True)["next_fire_at"] is None
    resumed = server.request("PATCH", f"/v1/schedules/{sid}", json={"paused": False}).json()
    nxt = at(resumed["next_fire_at"])
    assert nxt > server.clock.now()  # the missed fires are not made up on resume
    assert (nxt - created) / MINUTE == pytest.approx(round((nxt - created) / MINUTE), abs=1e-3)
    assert tick(server, sid, nxt - server.clock.now() + 1)["fire_count"] == 2


def test_catch_up_after_downtime_fires_once_or_not_at_all(tmp_path: Path, jobs: Path) -> None:
    clock = FakeClock()
    with faked(tmp_path, jobs, clock=clock) as srv:
        once = create(srv, job="tick", interval_s=MINUTE, catch_up="once")["id"]
        none = create(srv, job="tick", interval_s=MINUTE, catch_up="none")["id"]
    clock.advance(60 * MINUTE)  # the server was down for an hour: 60 fires missed
    with faked(tmp_path, jobs, clock=clock) as srv:
        wait_for(lambda: ticks(srv) >= 1, what="the first tick after the restart")
        assert get(srv, once)["fire_count"] == 1  # once, not 60 times
        skipped = get(srv, none)
        assert skipped["fire_count"] == 0
        assert at(skipped["next_fire_at"]) > clock.now()


def test_bad_schedules_are_refused(server: FakedServer) -> None:
    for body, field in (
        ({"job": "tick", "cron": "not cron"}, "cron"),
        ({"job": "tick"}, "cron"),
        ({"job": "tick", "cron": "* * * * *", "interval_s": 5}, "cron"),
        ({"job": "echo", "interval_s": 5, "params": {"n": 99}}, "params.n"),
        ({"job": "tick", "interval_s": 5, "overlap": "sometimes"}, "overlap"),
        # the value as sent, not rounded to the minimum it is refused for (a probe)
        ({"job": "tick", "interval_s": 0.9999999}, "interval_s: 0.9999999 is under"),
    ):
        resp = server.post("/v1/schedules", json=body)
        assert resp.status_code == 422, body
        assert field in resp.json()["detail"]
    nan = server.post(
        "/v1/schedules", content=b'{"job": "tick", "interval_s": NaN}',
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert nan.status_code == 422 and "finite number" in nan.json()["detail"], nan.text
    assert server.post("/v1/schedules", json={"job": "nope", "interval_s": 1}).status_code == 404
    assert server.get("/v1/schedules").json() == {"schedules": [], "next_cursor": None}
    cron = create(server, job="tick", cron="*/5 * * * *")
    assert cron["next_fire_at"] is not None
    assert server.request("DELETE", f"/v1/schedules/{cron['id']}").status_code == 204
    assert server.get(f"/v1/schedules/{cron['id']}").status_code == 404


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("5-1 * * * *", "minute: the range '5-1' runs backwards (5 > 1)"),
        ("*/1000000000000000000000 * * * *", "minute: step"),
        ("0 0 31W 2 *", "day-of-month: '31W' is not a number from 1 to 31"),
        ("0 0 30 2 MON#5", "day-of-week: '#' is not standard cron"),
        ("0 0 * * 8", "day-of-week: '8' is not a number from 0 to 7"),
        # said in words, not as the OpenAPI pattern that would refuse them too (a probe)
        ("* * * * * *", "'* * * * * *': has 6 fields, not five"),
        ("@reboot", "'@reboot': is not a macro; these are: @yearly"),
        ("0 0 ? * *", "day-of-month: '?' is not standard cron"),
        ("\u0661 * * * *", "cron is ASCII only"),
    ],
)
def test_a_cron_outside_standard_cron_is_a_422_naming_its_field(
    server: FakedServer, cron: str, words: str
) -> None:
    """croniter took far more than the five fields the docs promise, and read some of it in
    ways nobody would guess (`5-1` wrapped around the hour); refused, saying where and why."""
    for resp in (
        server.post("/v1/schedules", json={"job": "tick", "cron": cron}),
        server.request(
            "PATCH",
            f"/v1/schedules/{create(server, job='tick', cron='0 * * * *')['id']}",
            json={"cron": cron},
        ),
    ):
        assert resp.status_code == 422, resp.text
        problem = resp.json()
        assert [e["field"].removeprefix("body.") for e in problem["errors"]] == ["cron"]
        assert words in problem["detail"]
    assert [s["cron"] for s in server.get("/v1/schedules").json()["schedules"]] == ["0 * * * *"]


def test_a_stored_cron_this_version_refuses_is_reported_not_raised(
    tmp_path: Path, jobs: Path
) -> None:
    """A cron an earlier version stored (croniter's `5-1`, `L`): the server starts, lists it
    and says so in its log; it fires what was already planned and no more, and can be given a
    new cron. Resuming it as it is asks for one."""
    clock = FakeClock()
    with faked(tmp_path, jobs, clock=clock) as srv:
        once = create(srv, job="tick", cron="0 * * * *", overlap="allow")["id"]
        none = create(srv, job="tick", cron="0 * * * *", catch_up="none")["id"]
        paused = create(srv, job="tick", cron="0 * * * *", paused=True)["id"]

        async def written_by_an_earlier_version() -> None:
            for s, cron in zip(
                sorted(await srv.runtime.store.list_schedules(), key=lambda s: s.id),
                ("5-1 * * * *", "0 0 L * *", "0 0 * * MON#5"),
                strict=True,
            ):
                await srv.runtime.store.save_schedule(replace(s, cron=cron))

        srv.call(written_by_an_earlier_version())
    clock.advance(2 * 3600)  # down past their planned fires
    with structlog.testing.capture_logs() as logs, faked(tmp_path, jobs, clock=clock) as srv:
        wait_for(lambda: get(srv, once)["fire_count"] == 1, what="the planned fire")
        listed = {s["id"]: s for s in srv.get("/v1/schedules").json()["schedules"]}
        assert [listed[sid]["cron"] for sid in (once, none, paused)] == [
            "5-1 * * * *", "0 0 L * *", "0 0 * * MON#5"
        ]  # fmt: skip
        assert listed[once]["next_fire_at"] is None  # not due again: no guess at its meaning
        assert (listed[none]["fire_count"], listed[none]["next_fire_at"]) == (0, None)
        resumed = srv.request("PATCH", f"/v1/schedules/{paused}", json={"paused": False})
        assert resumed.status_code == 422, resumed.text
        assert "day-of-week: '#' is not standard cron" in resumed.json()["detail"]
        assert get(srv, paused)["paused"] is True
        fixed = srv.request("PATCH", f"/v1/schedules/{once}", json={"cron": "0 * * * *"})
        assert fixed.status_code == 200, fixed.text
        assert at(fixed.json()["next_fire_at"]) > clock.now()
        assert srv.request("DELETE", f"/v1/schedules/{none}").status_code == 204
    invalid = [e for e in logs if e["event"] == "schedule_timing_invalid"]
    assert sorted(e["schedule_id"] for e in invalid) == sorted([once, none])
    # the schedule's state, not a fault: one line, no traceback (a re-probe: an `error` with
    # its traceback and the whole stored cron, 5,000 characters of it)
    assert [(e["log_level"], "exc_info" in e) for e in invalid] == [("warning", False)] * 2
    assert all("5-1" in e["error"] or "L" in e["error"] for e in invalid), invalid


def test_a_refused_write_leaves_the_schedule_as_it_was(
    server: FakedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk refuses a change: what the API shows of the schedule is what the store
    holds, unchanged (it used to show the change that was never written)."""
    sid = create(server, job="tick", interval_s=MINUTE, overlap="allow")["id"]
    before = get(server, sid)
    monkeypatch.setattr(failpoints, "_STATE", failpoints._Failpoints("store_commit=enospc"))
    change = {"overlap": "skip", "interval_s": 2 * MINUTE, "paused": True}
    assert server.request("PATCH", f"/v1/schedules/{sid}", json=change).status_code == 507
    assert get(server, sid) == before
    monkeypatch.setattr(failpoints, "_STATE", failpoints._Failpoints(None))
    assert server.request("PATCH", f"/v1/schedules/{sid}", json=change).is_success
    after = get(server, sid)
    assert (after["overlap"], after["interval_s"], after["paused"]) == ("skip", 2 * MINUTE, True)


def test_a_refused_fire_stays_due_and_is_tried_again_shortly(
    server: FakedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk refuses a fire: the schedule is unchanged and still due, and the scheduler
    tries again after a pause, not in a loop that spins while the disk stays full; the fire
    lands once writes work."""
    sid = create(server, job="tick", interval_s=MINUTE, overlap="allow")["id"]
    before = get(server, sid)
    monkeypatch.setattr(failpoints, "_STATE", failpoints._Failpoints("store_commit=enospc"))
    server.clock.advance(MINUTE)
    counted = ticks(server)
    server.loop.call_soon_threadsafe(server.runtime.scheduler._wake.set)  # a PATCH would fail
    wait_for(lambda: ticks(server) > counted, what="the refused fire's tick")
    scheduler = server.runtime.scheduler  # its own count, not /health's periodic copy
    refused = scheduler.snapshot.ticks
    time.sleep(0.3)  # the fault stays: a spinning retry would tick hundreds of times meanwhile
    assert scheduler.snapshot.ticks <= refused + 1
    assert get(server, sid) == before  # nothing fired, nothing skipped past
    monkeypatch.setattr(failpoints, "_STATE", failpoints._Failpoints(None))
    wait_for(lambda: get(server, sid)["fire_count"] == 1, what="the fire once writes work")
    assert len(runs_of(server, sid)) == 1


def test_a_server_holds_at_most_max_schedules(tmp_path: Path, jobs: Path) -> None:
    """Unbounded, each create republished them all and the list grew without end."""
    with faked(tmp_path, jobs, max_schedules=2) as srv:
        made = [create(srv, job="tick", interval_s=60, paused=True)["id"] for _ in range(2)]
        over = srv.post("/v1/schedules", json={"job": "tick", "interval_s": 60})
        assert over.status_code == 409, over.text
        assert over.json()["limit"] == 2
        assert "max_schedules" in over.json()["detail"]
        assert sorted(s["id"] for s in srv.get("/v1/schedules").json()["schedules"]) == sorted(made)
        assert srv.request("DELETE", f"/v1/schedules/{made[0]}").status_code == 204
        create(srv, job="tick", interval_s=60, paused=True)  # room again


def test_a_null_timing_is_given_only_beside_the_other(server: FakedServer) -> None:
    """{"cron": null} on an interval schedule was refused, the interval cleared too; then it
    changed nothing there and was refused on a cron schedule: one request, two answers by
    the schedule's state, which the OpenAPI document could not say (a probe). A null is given
    beside the timing that replaces it, on either kind; alone it is refused, nothing changed."""
    sid = create(server, job="tick", interval_s=60, paused=True)["id"]
    for body in ({"cron": None}, {"cron": None, "paused": False}, {"interval_s": None}):
        resp = server.request("PATCH", f"/v1/schedules/{sid}", json=body)
        assert resp.status_code == 422, resp.text
        got = get(server, sid)
        assert (got["cron"], got["interval_s"], got["paused"]) == (None, 60, True)
    switch = {"cron": "0 * * * *", "interval_s": None}
    switched = server.request("PATCH", f"/v1/schedules/{sid}", json=switch)
    assert (switched.json()["cron"], switched.json()["interval_s"]) == ("0 * * * *", None)
    resp = server.request("PATCH", f"/v1/schedules/{sid}", json={"cron": None})
    assert resp.status_code == 422, resp.text
    assert get(server, sid)["cron"] == "0 * * * *"


def test_a_draining_server_fires_nothing_and_looks_again_only_after_a_pause(
    server: FakedServer,
) -> None:
    """While draining a due fire is left due; the tick said it fired nothing "refused", so
    the scheduler looked again at once, for ever: 70,000 ticks a second (a review)."""
    sid = create(server, job="tick", interval_s=MINUTE, overlap="allow")["id"]
    server.runtime.runs.stop_accepting()
    server.clock.advance(MINUTE + 1)
    assert server.call(server.runtime.scheduler._tick()) is True  # wait FIRE_RETRY_S first
    assert runs_of(server, sid) == [] and get(server, sid)["fire_count"] == 0


def test_a_waiting_fire_whose_run_ended_while_the_server_was_down_goes_at_the_restart(
    tmp_path: Path, jobs: Path
) -> None:
    """A probe: the previous run's end was recorded as the server started (reconcile), before
    its scheduler led and could hear it; the waiting fire went only at the next slot."""
    clock = FakeClock()
    with faked(tmp_path, jobs, clock=clock) as srv:
        sid = create(srv, job="tick", interval_s=MINUTE, overlap="queue")["id"]
        tick(srv, sid, MINUTE)
        (first,) = runs_of(srv, sid)
        wait_for(lambda: srv.launched() == [first], what="the first run to start")
        assert tick(srv, sid, MINUTE)["fire_count"] == 1  # deferred: waits for the first
    # its program went with the server (a fake executor): the restart records it lost, with
    # the clock where it was, so no slot of the schedule is due
    with faked(tmp_path, jobs, clock=clock) as srv:
        wait_for(lambda: len(runs_of(srv, sid)) == 2, what="the waiting fire")
        assert srv.run(first)["state"] == "failed"
        s = get(srv, sid)
        assert s["fire_count"] == 2 and at(s["next_fire_at"]) > clock.now()


def test_a_schedule_whose_fires_make_no_run_says_why_and_logs_it_once(
    tmp_path: Path, jobs: Path
) -> None:
    """A probe: its job edited to refuse its params, or removed, each fire was a skip, a
    warning line each, and the schedule showed nothing wrong."""
    echo = jobs / "echo.toml"
    with structlog.testing.capture_logs() as logs, faked(tmp_path, jobs, jobs_refresh_s=0) as srv:
        sid = create(srv, job="echo", params={"n": 7}, interval_s=MINUTE, overlap="allow")["id"]
        echo.write_text(JOBS["echo"].replace("max = 10", "max = 5"))
        tick(srv, sid, MINUTE)
        s = tick(srv, sid, MINUTE)
        assert (s["fire_count"], s["skip_count"], s["fail_count"]) == (0, 0, 2)
        assert s["last_error"].startswith("params no longer valid: "), s["last_error"]
        (shown,) = srv.get("/health").json()["scheduler"]["schedules"]
        assert (shown["fail_count"], shown["last_error"]) == (2, s["last_error"])
        echo.write_text("command = [")  # a file that fails to load is no missing job
        s = tick(srv, sid, MINUTE)
        assert s["fail_count"] == 3
        assert s["last_error"].startswith("job 'echo' cannot be loaded: "), s["last_error"]
        echo.unlink()
        s = tick(srv, sid, MINUTE)
        assert (s["fail_count"], s["last_error"]) == (4, "job 'echo' does not exist")
        # a probe: changing its params was a 404 naming `body.job`, which the PATCH had not
        # sent (a client takes a 404 for the schedule gone); a pause is still taken
        path = f"/v1/schedules/{sid}"
        refused = srv.request("PATCH", path, json={"params": {"n": 1}})
        assert refused.status_code == 409, refused.text
        assert "job 'echo' is no longer declared" in refused.json()["detail"]
        assert "field" not in refused.json()
        assert srv.request("PATCH", path, json={"paused": True}).status_code == 200
        assert srv.request("PATCH", path, json={"paused": False}).status_code == 200
        echo.write_text(JOBS["echo"])
        s = tick(srv, sid, MINUTE)
        assert (s["fire_count"], s["fail_count"], s["last_error"]) == (1, 4, None)
        assert len(runs_of(srv, sid)) == 1
    said = [e["event"] for e in logs if e.get("schedule_id") == sid]
    assert said == [
        "schedule_params_invalid", "schedule_job_unloadable", "schedule_job_missing",
        "schedule_fires_again",
    ]  # fmt: skip


def test_a_retime_of_a_schedule_whose_params_its_job_no_longer_takes_names_the_schedule(
    tmp_path: Path, jobs: Path
) -> None:
    """A probe: with its job edited to refuse the stored params, a retime was a 422 naming
    `body.params.n`, which the PATCH had not sent. It is the schedule's conflict (409), said
    so; sending params with the change is checked as ever, and a pause is still taken."""
    echo = jobs / "echo.toml"
    with faked(tmp_path, jobs, jobs_refresh_s=0) as srv:
        sid = create(srv, job="echo", params={"n": 7}, interval_s=MINUTE, paused=True)["id"]
        echo.write_text(JOBS["echo"].replace("max = 10", "max = 5"))
        path = f"/v1/schedules/{sid}"
        retimed = srv.request("PATCH", path, json={"interval_s": 2 * MINUTE})
        assert retimed.status_code == 409, retimed.text
        problem = retimed.json()
        assert "the schedule's params no longer fit its job 'echo'" in problem["detail"]
        assert "errors" not in problem and "field" not in problem  # nothing it sent
        wrong = srv.request("PATCH", path, json={"interval_s": 2 * MINUTE, "params": {"n": 6}})
        assert wrong.status_code == 422, wrong.text  # params sent: named as ever
        assert wrong.json()["errors"][0]["field"] == "body.params.n"
        fixed = srv.request("PATCH", path, json={"interval_s": 2 * MINUTE, "params": {"n": 4}})
        assert fixed.status_code == 200, fixed.text
        assert fixed.json()["interval_s"] == 2 * MINUTE


def test_a_catch_up_the_store_refuses_is_tried_again(
    tmp_path: Path, jobs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found beside a probe: a catch-up's write refused (a server started on a full disk)
    ended the scheduler's loop, and no schedule fired again until a restart."""
    clock = FakeClock()
    with faked(tmp_path, jobs, clock=clock) as srv:
        sid = create(srv, job="tick", interval_s=MINUTE, catch_up="none")["id"]
    clock.advance(10 * MINUTE)  # down for ten slots: its catch-up skips them, a write
    monkeypatch.setattr(failpoints, "_STATE", failpoints._Failpoints("store_commit=enospc"))
    with faked(tmp_path, jobs, clock=clock) as srv:
        scheduler = srv.runtime.scheduler
        wait_for(lambda: scheduler._task is not None, what="the scheduler's loop")
        assert not scheduler.leading
        monkeypatch.setattr(failpoints, "_STATE", failpoints._Failpoints(None))
        wait_for(lambda: scheduler.leading, what="the catch-up once writes work")
        s = get(srv, sid)
        assert s["fire_count"] == 0 and at(s["next_fire_at"]) > clock.now()
        assert tick(srv, sid, MINUTE)["fire_count"] == 1
