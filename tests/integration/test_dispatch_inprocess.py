"""Dispatch without programs: priority then FIFO, per-job concurrency, retries with their backoff
on a fake clock, admission (429 with Retry-After), batches and cancel — the whole server in
this process on the real SQLite store, its attempts ended by the test (tests/fakes.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from runyard.models import RunState, attempt_key
from runyard.services.unavailable import unavailable_retry_s
from tests.fakes import acted_command
from tests.inprocess import FakedServer, faked
from tests.support import wait_for

JOBS = {
    "mark": 'command = ["true"]\n',
    "limited": 'command = ["true"]\nmax_queue = 3\n',
    "flood": 'command = ["true"]\nconcurrency = 1\n',
    "flaky": 'command = ["false"]\nmax_attempts = 3\nretry_on = [1]\n'
    "[backoff]\nbase_s = 30\nfactor = 2\njitter = 0\n",
    "defaults": 'command = ["true"]\n[params.n]\ntype = "int"\ndefault = 0\n'
    '[params.x]\ntype = "float"\ndefault = 1.5\n',
    "grid": 'command = ["echo", "{a}", "{b}"]\n[params.a]\ntype = "int"\n'
    '[params.b]\ntype = "int"\nmax = 100\n',
}


@pytest.fixture
def jobs(write_job: Callable[[str, str], Path], jobs_dir: Path) -> Path:
    for name, text in JOBS.items():
        write_job(name, text)
    return jobs_dir


@pytest.fixture
def server(tmp_path: Path, jobs: Path) -> Iterator[FakedServer]:
    with faked(tmp_path, jobs, capacity=1) as srv:
        yield srv


def launches(srv: FakedServer, n: int) -> list[str]:
    """The run ids launched so far, once there are `n` of them."""
    return wait_for(lambda: len(srv.launched()) >= n and srv.launched(), what=f"{n} launches")


def state_of(srv: FakedServer, run_id: str, state: str) -> dict[str, object]:
    return wait_for(
        lambda: (r := srv.run(run_id))["state"] == state and r, what=f"{run_id} {state}"
    )


def test_priority_then_fifo(server: FakedServer) -> None:
    holder = server.submit("mark")["id"]
    launches(server, 1)
    order = [server.submit("mark", priority=p)["id"] for p in (0, 5, 5, 0, 9)]
    expected = [order[i] for i in (4, 1, 2, 0, 3)]
    server.finish(holder)
    for n, run_id in enumerate(expected, start=2):
        assert launches(server, n)[-1] == run_id
        assert len(server.executor.running_keys()) == 1  # capacity 1, never more
        server.finish(run_id)
    for run_id in order:
        assert state_of(server, run_id, "succeeded")["exit_code"] == 0


def test_flooded_job_does_not_block_another(tmp_path: Path, jobs: Path) -> None:
    with faked(tmp_path, jobs, capacity=2) as srv:
        flood = [srv.submit("flood")["id"] for _ in range(20)]
        other = srv.submit("mark")["id"]
        assert sorted(launches(srv, 2)) == sorted([flood[0], other])
        queued = srv.get("/v1/runs", params={"job": "flood", "state": "queued"}).json()
        assert len(queued["runs"]) == 19
        # a free slot is not given to a second flood run: its concurrency is 1
        srv.finish(other)
        state_of(srv, other, "succeeded")
        srv.settle()
        assert srv.launched() == [flood[0], other] or srv.launched() == [other, flood[0]]
        srv.finish(flood[0])
        assert launches(srv, 3)[-1] == flood[1]  # then the next one, FIFO
        assert len(srv.executor.running_keys()) == 1


def test_a_failed_attempt_is_retried_after_its_backoff(server: FakedServer) -> None:
    run_id = server.submit("flaky")["id"]
    launches(server, 1)
    server.finish(run_id, 1, exit_code=1)
    run = state_of(server, run_id, "queued")
    assert run["attempt"] == 1
    assert isinstance(run["not_before"], str)
    due = datetime.fromisoformat(run["not_before"]).timestamp()
    assert due == pytest.approx(server.clock.now() + 30, abs=0.01)  # base_s, no jitter
    # not before its time: another submission wakes the dispatcher, which leaves it queued
    server.clock.advance(29)
    other = server.submit("mark")["id"]
    assert launches(server, 2)[-1] == other
    server.finish(other)
    state_of(server, other, "succeeded")
    assert server.run(run_id)["state"] == "queued"
    server.clock.advance(1.5)
    server.submit("limited")  # any wake-up: the retry is due now and goes first (FIFO)
    assert launches(server, 3)[-1] == run_id
    assert server.executor.launches[-1].attempt == 2
    server.finish(run_id, 2, exit_code=1)
    run = state_of(server, run_id, "queued")
    due = datetime.fromisoformat(str(run["not_before"])).timestamp()
    assert due == pytest.approx(server.clock.now() + 60, abs=0.01)  # base_s * factor
    limited = launches(server, 4)[-1]  # the slot it left went to the run that woke us
    server.finish(limited)
    state_of(server, limited, "succeeded")
    server.clock.advance(61)
    server.submit("mark")
    assert launches(server, 5)[-1] == run_id
    assert server.executor.launches[-1].attempt == 3
    server.finish(run_id, 3, exit_code=1)
    run = state_of(server, run_id, "failed")  # max_attempts reached
    assert run["attempt"] == 3
    assert run["exit_code"] == 1


def test_queue_full_answers_429_at_the_exact_depth(tmp_path: Path, jobs: Path) -> None:
    with faked(tmp_path, jobs, capacity=1, max_queue=5) as srv:
        holder = srv.submit("mark")["id"]
        launches(srv, 1)
        for _ in range(3):
            srv.submit("limited")
        resp = srv.post("/v1/runs", json={"job": "limited"})
        assert resp.status_code == 429
        assert resp.headers["content-type"] == "application/problem+json"
        assert int(resp.headers["Retry-After"]) == 30  # nothing finished yet: no rate known
        assert "max_queue (3)" in resp.json()["detail"]
        srv.submit("mark")
        srv.submit("mark")  # 5 queued in all: the server's max_queue
        resp = srv.post("/v1/runs", json={"job": "mark"})
        assert resp.status_code == 429
        assert "the server's max_queue (5)" in resp.json()["detail"]
        queued = srv.get("/v1/runs", params={"state": "queued"}).json()["runs"]
        assert len(queued) == 5  # nothing more was stored
        # runs finish: Retry-After follows the rate at which the queue drains
        srv.finish(holder)
        for n in range(2, 5):
            srv.finish(launches(srv, n)[-1])
        launches(srv, 5)  # four of the five queued have started: one is left
        for _ in range(4):
            assert srv.post("/v1/runs", json={"job": "mark"}).status_code == 202  # room again
        resp = srv.post("/v1/runs", json={"job": "mark"})
        assert resp.status_code == 429
        assert 1 <= int(resp.headers["Retry-After"]) < 30


def test_invalid_sweep_element_creates_nothing(server: FakedServer) -> None:
    sweep = {"a": [1, 2, 3], "b": [10, 20, 999]}
    resp = server.post("/v1/batches", json={"job": "grid", "sweep": sweep})
    assert resp.status_code == 422
    assert "params.b" in resp.json()["detail"]
    assert "no run was created" in resp.json()["detail"]
    assert server.get("/v1/runs").json()["runs"] == []
    both = {"job": "grid", "params": {"a": 1, "b": 2}, "iterations": 2, "sweep": {"a": [1]}}
    assert server.post("/v1/batches", json=both).status_code == 422


def test_batch_too_large_is_refused(tmp_path: Path, jobs: Path) -> None:
    with faked(tmp_path, jobs, max_batch=10) as srv:
        sweep = {"a": [1, 2, 3, 4], "b": [1, 2, 3]}
        resp = srv.post("/v1/batches", json={"job": "grid", "sweep": sweep})
        assert resp.status_code in (413, 422)
        assert "max_batch (10)" in resp.json()["detail"]
        assert srv.get("/v1/runs").json()["runs"] == []


def test_batch_cancel_catches_a_run_that_went_back_to_the_queue_between_its_lists(
    tmp_path: Path, jobs: Path
) -> None:
    """The running runs were listed after the queued ones: a run retried in between (running,
    then queued again) was in neither list, and made its attempts after the cancel."""
    with faked(tmp_path, jobs, capacity=1) as srv:
        batch = srv.post("/v1/batches", json={"job": "flaky", "iterations": 1}).json()
        (run_id,) = launches(srv, 1)
        store = srv.runtime.batches.store
        listed = store.batch_run_ids

        async def racing(batch_id: str, state: RunState) -> list[str]:
            found = await listed(batch_id, state)
            if state is RunState.QUEUED and not found:  # listed while it ran: now it retries
                store.batch_run_ids = listed  # type: ignore[method-assign]
                await srv.executor.finish(run_id, 1, exit_code=1)
                await srv.runtime.lifecycle._exits.wait()  # its end recorded: queued again
            return found

        store.batch_run_ids = racing  # type: ignore[method-assign]
        assert srv.post(f"/v1/batches/{batch['id']}/cancel").status_code in (200, 202)
        assert srv.run(run_id)["state"] == "cancelled"
        assert len(srv.launched()) == 1  # it never ran again


def test_a_batch_cancel_leaves_the_dispatcher_none_of_its_queued_runs_to_take(
    tmp_path: Path, jobs: Path, write_job: Callable[[str, str], Path]
) -> None:
    """A probe: a batch of 2,000 short runs cancelled half a second in mostly ran all the
    same (1,533 succeeded): its queued runs were cancelled one by one, and each slot a
    run freed meanwhile took the next. Here every run ends as it starts, from the moment
    the cancel has listed the queue: the cancel must end them before they are taken."""
    write_job("instant", f"command = {json.dumps(acted_command())}\n")
    with faked(tmp_path, jobs, capacity=1) as srv:
        holder = srv.submit("mark")["id"]
        launches(srv, 1)  # the one slot held: the batch waits in the queue
        batch = srv.post("/v1/batches", json={"job": "instant", "iterations": 40}).json()
        store = srv.runtime.batches.store
        cancel = store.cancel_queued_of_batch

        async def freeing(batch_id: str, at: float, reason: str) -> list[Any]:
            await srv.executor.finish(holder, 1)  # the slot frees: the dispatcher takes
            return await cancel(batch_id, at, reason)

        store.cancel_queued_of_batch = freeing  # type: ignore[method-assign]
        assert srv.post(f"/v1/batches/{batch['id']}/cancel").status_code in (200, 202)
        wait_for(lambda: srv.get(f"/v1/batches/{batch['id']}").json()["done"], what="all ended")
        counts = srv.get(f"/v1/batches/{batch['id']}").json()["counts"]
        assert counts.get("succeeded", 0) <= 2, counts  # what the freed slot took at once
        assert sum(counts.values()) == 40


def test_batch_cancel_ends_all_of_its_runs(tmp_path: Path, jobs: Path) -> None:
    with faked(tmp_path, jobs, capacity=2) as srv:
        batch = srv.post("/v1/batches", json={"job": "mark", "iterations": 5}).json()
        launches(srv, 2)
        assert srv.post(f"/v1/batches/{batch['id']}/cancel").status_code in (200, 202)
        wait_for(lambda: srv.get(f"/v1/batches/{batch['id']}").json()["done"], what="all ended")
        assert srv.get(f"/v1/batches/{batch['id']}").json()["counts"] == {"cancelled": 5}
        assert sorted(c[0] for c in srv.executor.cancels) == sorted(srv.launched())
        assert len(srv.launched()) == 2  # the queued three never started


def test_prefer_wait_answers_200_when_the_run_ends_in_time(server: FakedServer) -> None:
    pending = server.begin("POST", "/v1/runs", json={"job": "mark"},
                           headers={"Prefer": "wait=10"})  # fmt: skip
    (run_id,) = launches(server, 1)
    server.finish(run_id)
    resp = pending.result(timeout=10)
    assert resp.status_code == 200
    assert resp.json()["state"] == "succeeded"
    assert resp.headers["Preference-Applied"] == "wait=10"


@pytest.mark.parametrize(
    "prefer", ["wait=0.2", 'wait="0.2"', "WAIT = 0.2; x=1", 'foo="a, wait=9", wait=0.2']
)
def test_prefer_wait_answers_202_when_it_does_not(server: FakedServer, prefer: str) -> None:
    resp = server.post("/v1/runs", json={"job": "mark"}, headers={"Prefer": prefer})
    assert resp.status_code == 202
    assert resp.json()["state"] == "running"
    assert resp.headers["Preference-Applied"] == "wait=0.2"


def test_capacity_and_job_concurrency_are_never_exceeded(
    tmp_path: Path, write_job: Callable[[str, str], Path], jobs_dir: Path
) -> None:
    write_job("limited", 'command = ["true"]\nconcurrency = 2\n')
    write_job("free", 'command = ["true"]\n')
    with faked(tmp_path, jobs_dir, capacity=3) as srv:
        ids = [srv.submit(job)["id"] for _ in range(6) for job in ("limited", "free")]
        jobs = dict(zip(ids, ["limited", "free"] * 6, strict=True))
        most = most_limited = 0
        for n in range(3, 13):
            launches(srv, n)
            srv.settle()
            running = [k.split(".")[0] for k in srv.executor.running_keys()]
            most = max(most, len(running))
            most_limited = max(most_limited, sum(jobs[r] == "limited" for r in running))
            assert len(running) <= 3
            assert sum(jobs[r] == "limited" for r in running) <= 2
            srv.finish(running[0])  # the oldest ends: its slot goes to the next in line
        for run_id in srv.launched()[-2:]:
            srv.finish(run_id)
        for run_id in ids:
            assert state_of(srv, run_id, "succeeded")
        assert (most, most_limited) == (3, 2)  # it did run things side by side, to the limits


def counting_claims(srv: FakedServer, *methods: str) -> list[int]:
    """The store's calls of `methods` (its claims: the dispatcher's own and those an end makes
    in its transaction), counted from now on (calls[0])."""
    store, calls = srv.runtime.store, [0]
    for method in methods or ("claim", "end_and_claim"):
        original = getattr(store, method)

        async def counted(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            calls[0] += 1
            return await _original(*args, **kwargs)

        setattr(store, method, counted)
    return calls


def plain_jobs(tmp_path: Path) -> Path:
    jobs = tmp_path / "plain-jobs"
    jobs.mkdir()
    (jobs / "mark.toml").write_text('command = ["true"]\n')  # no concurrency limit anywhere
    return jobs


def one_run_ended(srv: FakedServer, claims: list[int]) -> int:
    """One run submitted, launched and ended alone: the claims counted before it ended."""
    run_id = srv.submit("mark")["id"]
    launches(srv, 1)
    before = claims[0]
    srv.finish(run_id)
    state_of(srv, run_id, "succeeded")
    return before


def test_an_end_into_a_dry_queue_claims_nothing_and_waiting_runs_are_still_taken(
    tmp_path: Path,
) -> None:
    """A claim that found the queue dry is not repeated for every end that follows (one store
    transaction per run saved when runs come one at a time); anything submitted since, and a
    run waiting for the slot, is still claimed."""
    with faked(tmp_path, plain_jobs(tmp_path), capacity=2) as srv:
        claims = counting_claims(srv)
        before = one_run_ended(srv, claims)
        srv.settle()
        assert claims[0] == before  # the queue was dry when it was claimed: nothing to look for
        queued = [srv.submit("mark")["id"] for _ in range(3)]
        # capacity 2; the two launches overlap (the fake prepares each on a thread): any order
        assert sorted(launches(srv, 3)[1:]) == sorted(queued[:2])
        srv.finish(queued[0])
        assert launches(srv, 4)[-1] == queued[2]  # waiting for a slot: taken once it is free
        for run_id in queued[1:]:
            srv.finish(run_id)
        for run_id in queued:
            state_of(srv, run_id, "succeeded")


def test_a_store_whose_claims_skip_rows_claims_again_after_every_end(tmp_path: Path) -> None:
    """PostgreSQL's claim skips rows other transactions hold (SKIP LOCKED): a short claim there
    does not prove the queue dry, so every end looks again, as before."""
    with faked(tmp_path, plain_jobs(tmp_path), capacity=2) as srv:
        srv.runtime.store.claims_see_every_run = False
        claims = counting_claims(srv)
        before = one_run_ended(srv, claims)
        wait_for(lambda: claims[0] > before, what="a claim after the end")


def test_the_next_backoff_is_read_again_only_when_a_retry_may_have_set_one(
    tmp_path: Path, jobs: Path
) -> None:
    """Submits and freed slots add no backoff: the dispatcher claims for them without asking
    the store when the next backing-off run is due; a retry's re-queue makes it ask again."""
    with faked(tmp_path, jobs, capacity=1) as srv:
        srv.settle()
        reads = counting_claims(srv, "next_due")
        marks = [srv.submit("mark")["id"] for _ in range(3)]
        for n, run_id in enumerate(marks, start=1):
            assert launches(srv, n)[-1] == run_id
            srv.finish(run_id)
            state_of(srv, run_id, "succeeded")
        assert reads[0] == 0  # three submits, three ends, every run claimed: not one read
        flaky = srv.submit("flaky")["id"]
        launches(srv, 4)
        srv.finish(flaky, 1, exit_code=1)
        state_of(srv, flaky, "queued")
        wait_for(lambda: reads[0] == 1, what="the due time read after the re-queue")
        srv.clock.advance(31)
        srv.submit("mark")  # a wake-up that reads nothing new, yet the due retry goes first
        assert launches(srv, 5)[-1] == flaky


def test_a_free_slots_launch_goes_out_before_the_answer_to_its_submit(
    server: FakedServer,
) -> None:
    """The run is claimed in its insert's own transaction; its spawn request leaves in the
    dispatcher's step, which goes before the answer to the submit is built and sent."""
    assert server.client is not None
    client = server.client

    async def submit_then_look() -> tuple[str, list[str]]:
        resp = await client.post("/v1/runs", json={"job": "mark"})
        assert resp.status_code == 202
        return resp.json()["id"], list(server.executor.sent)  # as the client got its answer

    # Only when the dispatcher waits for work: a pass of its own under way (the one at start,
    # or the look it takes after an end, slow on a loaded machine) takes the wake-up after it,
    # in a transaction of its own. Tried again after that run, never more than five times.
    tries = []
    for _ in range(5):
        run_id, sent = server.call(submit_then_look())
        tries.append(sent)
        if sent == [attempt_key(run_id, 1)]:
            return
        launches(server, len(tries))
        server.finish(run_id)
        state_of(server, run_id, "succeeded")
        server.executor.sent.clear()
    raise AssertionError(f"the launch never went out before the answer: {tries}")


def test_a_run_the_executor_cannot_take_waits_longer_at_each_attempt(server: FakedServer) -> None:
    """Not started for a reason not its own (the executor away, the disk full): back to the
    queue after 1 s, then 2, 4, ... at most a minute — a fault that lasts costs each run an
    attempt a minute, not one a second (each attempt is listed with the run)."""
    assert [unavailable_retry_s(n) for n in (1, 2, 3, 7, 8, 50)] == [1, 2, 4, 60, 60, 60]
    server.executor.connected = False
    run_id = server.submit("mark")["id"]

    def requeued(attempt: int) -> dict[str, Any] | None:
        run = server.run(run_id)
        return run if run["attempt"] == attempt and run["state"] == "queued" else None

    for attempt, wait in ((1, 1.0), (2, 2.0)):
        run = wait_for(lambda a=attempt: requeued(a), what=f"attempt {attempt} re-queued")
        assert "not started: the executor is unavailable" in str(run["reason"])
        due = datetime.fromisoformat(str(run["not_before"])).timestamp()
        assert due == pytest.approx(server.clock.now() + wait, abs=0.01)
        server.clock.advance(wait)  # its timer (real time, as long) then claims it again
    server.executor.connected = True
    assert launches(server, 1) == [run_id]


def test_a_batch_stays_done_when_its_runs_are_deleted(tmp_path: Path, jobs: Path) -> None:
    """Deleted runs are no longer counted, yet they ended: the batch was reported not done
    for good once one of its runs was deleted (by a request, by retention)."""
    with faked(tmp_path, jobs, capacity=2) as srv:
        batch = srv.post("/v1/batches", json={"job": "mark", "iterations": 2}).json()
        url = f"/v1/batches/{batch['id']}"
        assert srv.get(url).json()["done"] is False
        for run_id in launches(srv, 2):
            srv.finish(run_id)
        wait_for(lambda: srv.get(url).json()["done"], what="all ended")
        first, _ = srv.get(f"/v1/runs?batch={batch['id']}").json()["runs"]
        assert srv.request("DELETE", f"/v1/runs/{first['id']}").status_code == 204
        assert srv.get(url).json() | {"created_at": None} == {
            "id": batch["id"], "job": "mark", "size": 2, "created_at": None,
            "counts": {"succeeded": 1}, "done": True, "idempotency_key": None,
        }  # fmt: skip


def test_nothing_is_spawned_on_a_new_supervisor_before_the_pass_that_settles_the_old(
    tmp_path: Path, jobs: Path
) -> None:
    """A run claimed between the new supervisor's start and the reconcile pass was spawned,
    then taken by that pass for one never started: killed and re-queued (a probe)."""
    with faked(tmp_path, jobs, capacity=2) as srv:
        listed = srv.executor.running
        paused_while_listed: list[bool] = []

        async def running() -> Any:
            paused_while_listed.append(srv.runtime.dispatcher.paused)
            return await listed()

        srv.executor.running = running  # type: ignore[method-assign]
        srv.executor.connected = False  # the supervisor died
        srv.call(srv.runtime.lifecycle._supervisor_lost())
        task = srv.runtime.lifecycle._reconnecting
        assert task is not None
        srv.call(asyncio.wait_for(asyncio.shield(task), 30))
        assert paused_while_listed == [True]  # the pass ran with nothing being spawned
        assert not srv.runtime.dispatcher.paused  # and claims go on after it
        run = srv.submit("mark")
        assert launches(srv, 1) == [run["id"]]


def test_a_replay_is_the_same_request_whatever_way_its_params_were_written(
    server: FakedServer,
) -> None:
    """Compared as sent: a default sent that was left out, a float sent as 1 and read back as
    1.0 (how GET answers it), were "a different request" (409) (a probe: 1,891 of 2,802)."""

    def submit(key: str, params: dict[str, Any]) -> Any:
        return server.post("/v1/runs", json={"job": "defaults", "params": params},
                           headers={"Idempotency-Key": key})  # fmt: skip

    first = submit("k1", {})
    assert first.status_code == 202
    for same in ({"n": 0}, {"x": 1.5}, {"n": 0, "x": 1.5}):
        replay = submit("k1", same)
        assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json()["id"] == first.json()["id"]
    assert submit("k1", {"n": 1}).status_code == 409
    floats = submit("k2", {"x": 2})
    stored = server.run(floats.json()["id"])["params"]
    assert submit("k2", stored).json()["id"] == floats.json()["id"]
    # the job's priority given as it is (0), or left out: the same run (a probe: a 409)
    for body in ({"job": "defaults", "priority": 0}, {"job": "defaults"}):
        replay = server.post("/v1/runs", json=body, headers={"Idempotency-Key": "k1"})
        assert replay.status_code == 202, replay.text
        assert replay.json()["id"] == first.json()["id"]
    other = {"job": "defaults", "priority": 1}
    assert server.post("/v1/runs", json=other, headers={"Idempotency-Key": "k1"}).status_code == 409
