"""The store contract, continued: schedules, batches, counts and retention's listing."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from runyard.clock import new_id
from runyard.errors import StaleWriteError
from runyard.models import AttemptEnd, AttemptState, Batch, RunState, Schedule
from runyard.store import Store
from tests.integration.test_store_contract import make_run, succeeded

pytestmark = pytest.mark.anyio


def make_schedule(job: str = "j", **kw: Any) -> Schedule:
    schedule = Schedule(
        id=new_id(), job=job, params={"x": 1}, priority=None, labels={"team": "cfd"},
        cron=None, interval_s=60.0, overlap="skip", catch_up="once", paused=False,
        created_at=1000.0, next_fire_at=1060.0,
    )  # fmt: skip
    return replace(schedule, **kw)


async def test_schedules_are_written_whole_listed_and_deleted(store: Store) -> None:
    a, b = make_schedule("a"), make_schedule("b", cron="*/5 * * * *", interval_s=None)
    await store.save_schedule(a)
    await store.save_schedule(b)
    a.version = b.version = 1  # stored
    assert await store.list_schedules() == sorted([a, b], key=lambda s: s.id)
    a.paused, a.skip_count, a.pending = True, 3, True  # the whole row is written again
    a.fail_count, a.last_error = 2, "job 'a' does not exist"
    await store.save_schedule(a)
    a.version = 2
    assert [s for s in await store.list_schedules() if s.id == a.id] == [a]
    assert await store.delete_schedule(a.id)
    assert not await store.delete_schedule(a.id)
    assert [s.id for s in await store.list_schedules()] == [b.id]


async def test_a_write_from_a_stale_copy_changes_nothing(store: Store) -> None:
    """Two servers' copies of one schedule: the second write of version 1 (a fire, a change
    made through another server) is refused, its run with it; a deleted one stays deleted."""
    schedule = make_schedule()
    await store.save_schedule(schedule)
    mine, theirs = replace(schedule, version=1), replace(schedule, version=1)
    theirs.paused = True
    await store.save_schedule(theirs)
    fired = replace(mine, fire_count=1, next_fire_at=1120.0)
    run = make_run(schedule_id=schedule.id)
    with pytest.raises(StaleWriteError):
        await store.save_schedule(fired, run)
    assert await store.get_run(run.id) is None
    (stored,) = await store.list_schedules()
    assert (stored.paused, stored.fire_count, stored.version) == (True, 0, 2)
    assert await store.delete_schedule(schedule.id)
    with pytest.raises(StaleWriteError):
        await store.save_schedule(stored)
    assert await store.list_schedules() == []


async def test_a_fire_stores_its_run_with_the_schedules_new_state(store: Store) -> None:
    schedule = make_schedule()
    await store.save_schedule(schedule)
    schedule.version = 1
    run = make_run(schedule_id=schedule.id)
    schedule.last_run_id, schedule.fire_count, schedule.last_fired_at = run.id, 1, 1060.0
    await store.save_schedule(schedule, run)
    assert await store.get_run(run.id) == run
    assert [e.data["to"] for e in await store.list_events(run.id, 0)] == ["queued"]
    (saved,) = await store.list_schedules()
    assert (saved.last_run_id, saved.fire_count) == (run.id, 1)


async def test_a_fire_whose_run_cannot_be_stored_changes_nothing(store: Store) -> None:
    schedule = make_schedule()
    await store.save_schedule(schedule)
    taken = (await store.insert_run(make_run()))[0]
    clash = make_run(schedule_id=schedule.id)
    clash.id = taken.id  # the run's insert fails: the schedule's new state must not land
    fired = replace(schedule, fire_count=1, last_run_id=taken.id)
    with pytest.raises(Exception):  # noqa: B017  each database names it its own way
        await store.save_schedule(replace(fired, version=1), clash)
    assert await store.list_schedules() == [replace(schedule, version=1)]


async def test_a_batch_is_read_back_counted_and_listed_by_state(store: Store) -> None:
    batch = Batch(new_id(), "j", 3, 1000.0, {"job": "j", "params": [{}, {}, {}]})
    runs = [make_run(batch_id=batch.id, created=1000.0 + i) for i in range(3)]
    await store.insert_batch(batch, runs)
    assert await store.get_batch(batch.id) == batch
    assert await store.get_batch("missing") is None
    assert await store.batch_counts(batch.id) == {"queued": 3}
    (claim,) = await store.claim(1, {}, now=2000.0, host="h")
    assert claim.run.id == runs[0].id
    assert await store.batch_counts(batch.id) == {"queued": 2, "running": 1}
    queued = await store.batch_run_ids(batch.id, RunState.QUEUED)
    assert sorted(queued) == sorted(r.id for r in runs[1:])
    assert await store.batch_run_ids(batch.id, RunState.RUNNING) == [runs[0].id]
    assert await store.batch_counts("missing") == {}


async def test_a_batchs_runs_read_back_whole_with_their_first_event(store: Store) -> None:
    batch = Batch(new_id(), "j", 3, 1000.0, {"job": "j"})
    spec = {"name": "j", "command": ["true"], "env": {"A": "1"}}  # one object, shared
    runs = [
        replace(make_run(batch_id=batch.id, created=1000.0 + i, labels={"i": str(i)}),
                params={"i": i}, spec=spec)
        for i in range(3)
    ]  # fmt: skip
    await store.insert_batch(batch, runs)
    for run in runs:
        assert await store.get_run(run.id) == run
        (first,) = await store.list_events(run.id, 0)
        assert (first.seq, first.at, first.kind) == (1, run.created_at, "state")
        assert first.data == {"from": None, "to": "queued", "attempt": 0, "exit_code": None,
                              "reason": None}  # fmt: skip
    (claim,) = await store.claim(1, {}, now=2000.0, host="h")
    later = await store.list_events(claim.run.id, 1)
    assert [(e.seq, e.data["to"]) for e in later] == [(2, "running")]


async def test_runs_are_counted_by_job_in_a_state(store: Store) -> None:
    for job in ("a", "a", "b"):
        await store.insert_run(make_run(job))
    assert await store.counts_by_job(RunState.QUEUED) == {"a": 2, "b": 1}
    assert await store.counts_by_job(RunState.RUNNING) == {}
    await store.claim(1, {}, now=2000.0, host="h")
    assert await store.counts_by_job(RunState.RUNNING) == {"a": 1}
    assert await store.count_runs(RunState.RUNNING, "a") == 1


async def _ended(store: Store, at: float, spec: dict[str, Any] | None = None) -> str:
    """A run ended at `at`, of a job stored as `spec` (a TTL of its own, or none)."""
    run = make_run()
    if spec is not None:
        run = replace(run, spec=spec)
    await store.insert_run(run)
    (claim,) = await store.claim(1, {}, now=at - 10, host="h")  # the oldest queued first
    await store.end_attempt(claim.run.id, 1, succeeded(at))
    return claim.run.id


def _ttl(seconds: object) -> dict[str, Any]:
    return {"name": "j", "command": ["true"], "retention_s": seconds}


async def test_runs_expire_by_their_own_ttl_soonest_first_in_pages(store: Store) -> None:
    """Retention's listing: a run whose job has a TTL, as the run stored it, expires at its
    end plus that TTL; a run of a job without one never expires by this listing."""
    late = await _ended(store, 3000.0, _ttl(10))  # expires 3010
    soon = await _ended(store, 2990.0, _ttl(5))  # 2995
    whole = await _ended(store, 2900.0, _ttl(60))  # 2960: a whole number, as JSON has it
    await _ended(store, 1000.0)  # no TTL of its own: never listed here
    await _ended(store, 1000.0, _ttl("60"))  # not a number (a damaged record): nor this
    await _ended(store, 2000.0, _ttl(10_000))  # not yet
    listed = await store.expired(5000.0, 10)
    assert listed == [(whole, 2960.0), (soon, 2995.0), (late, 3010.0)]
    assert [r[0] for r in await store.expired(3000.0, 10)] == [whole, soon]
    first = await store.expired(5000.0, 2)
    assert await store.expired(5000.0, 2, (first[-1][1], first[-1][0])) == [(late, 3010.0)]
    # runs that expire at the same time are each listed once, a page boundary between them
    tied = sorted([await _ended(store, 3400.0, _ttl(100)) for _ in range(3)])
    await store.insert_run(make_run())  # queued: never listed
    seen, after = [], None
    while page := await store.expired(5000.0, 1, after):
        seen.append(page[0][0])
        after = (page[0][1], page[0][0])
    assert seen == [whole, soon, late, *tied]


async def test_runs_without_a_ttl_of_their_own_are_listed_by_their_end(store: Store) -> None:
    """The listing the server's TTL applies to: ended runs whose job has no TTL, oldest first."""
    ended = [await _ended(store, at) for at in (3000.0, 2998.0, 2999.0)]
    damaged = await _ended(store, 2997.0, _ttl("60"))  # its TTL is no number: the server's
    await _ended(store, 1000.0, _ttl(5))  # its own TTL: never listed here
    await store.insert_run(make_run())  # queued: never listed
    oldest_first = [damaged, ended[1], ended[2], ended[0]]
    listed = await store.untimed_before(5000.0, 10)
    assert listed == list(zip(oldest_first, [2997.0, 2998.0, 2999.0, 3000.0], strict=True))
    page = await store.untimed_before(5000.0, 3)
    after = (page[-1][1], page[-1][0])
    assert [r[0] for r in await store.untimed_before(5000.0, 3, after)] == oldest_first[3:]
    assert [r[0] for r in await store.untimed_before(2999.0, 10)] == oldest_first[:2]


async def test_a_runs_state_events_record_each_change_when_it_happened(store: Store) -> None:
    """Every state change of a run's life is one event, at the time of the change and with
    the run as it then was: a retry and its second attempt, and a cancel while queued."""
    run = (await store.insert_run(make_run(created=1000.0)))[0]
    await store.claim(1, {}, now=2000.0, host="h")
    retry = AttemptEnd(
        attempt_state=AttemptState.EXITED, ended_at=2001.0, run_state=RunState.QUEUED,
        reason="exit code 1; retrying", outcome="exit", exit_code=1, not_before=2050.0,
    )  # fmt: skip
    await store.end_attempt(run.id, 1, retry)
    await store.claim(1, {}, now=2100.0, host="h")
    await store.end_attempt(run.id, 2, succeeded(2101.0))
    life = [(e.seq, e.at, e.kind, e.data) for e in await store.list_events(run.id, 0)]

    def state(frm: str | None, to: str, attempt: int, code: int | None, why: str | None) -> Any:
        return {"from": frm, "to": to, "attempt": attempt, "exit_code": code, "reason": why}

    assert life == [
        (1, 1000.0, "state", state(None, "queued", 0, None, None)),
        (2, 2000.0, "state", state("queued", "running", 1, None, None)),
        (3, 2001.0, "state", state("running", "queued", 1, 1, "exit code 1; retrying")),
        (4, 2100.0, "state", state("queued", "running", 2, None, None)),  # its retry runs
        (5, 2101.0, "state", state("running", "succeeded", 2, 0, "exit code 0")),
    ]
    queued = (await store.insert_run(make_run(created=1200.0)))[0]
    await store.cancel_queued(queued.id, 1500.0, "cancelled by a user")
    (_, cancelled) = await store.list_events(queued.id, 0)
    assert (cancelled.seq, cancelled.at, cancelled.data) == (
        2,
        1500.0,
        state("queued", "cancelled", 0, None, "cancelled by a user"),
    )
