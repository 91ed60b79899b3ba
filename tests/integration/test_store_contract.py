"""The store contract: every implementation must pass these unchanged."""

from __future__ import annotations

from dataclasses import replace

import pytest

from runyard import failpoints, fastjson
from runyard.clock import new_id
from runyard.errors import StorageIOError
from runyard.models import AttemptEnd, AttemptState, Batch, ClaimAsk, Run, RunFilter, RunState
from runyard.store import Store
from runyard.store.progress import MAX_RUN_EVENTS, MAX_RUN_PROGRESS_BYTES
from runyard.store.rows import PAGE_BYTES

pytestmark = pytest.mark.anyio


def make_run(job: str = "j", priority: int = 0, created: float = 1000.0, **kw: object) -> Run:
    return Run(
        id=new_id(), job=job, params={"x": 1}, state=RunState.QUEUED, priority=priority,
        created_at=created, spec={"name": job, "command": ["true"]}, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def succeeded(at: float = 2000.0) -> AttemptEnd:
    return AttemptEnd(
        attempt_state=AttemptState.EXITED, ended_at=at, run_state=RunState.SUCCEEDED,
        reason="exit code 0", outcome="exit", exit_code=0, pid=42, started_at=at - 1,
    )  # fmt: skip


async def test_insert_and_get_round_trip(store: Store) -> None:
    run = make_run(labels={"team": "cfd"}, idempotency_key="k1", request_hash="h")
    _stored, created = await store.insert_run(run)
    assert created
    got = await store.get_run(run.id)
    assert got == run
    assert await store.get_run("missing") is None


async def test_idempotency_key_returns_the_first_run(store: Store) -> None:
    first, created = await store.insert_run(make_run(idempotency_key="same"))
    again, created_again = await store.insert_run(make_run(idempotency_key="same"))
    assert created and not created_again
    assert again.id == first.id
    assert (await store.get_run_by_idempotency_key("same")) == first
    page = await store.list_runs(RunFilter())
    assert len(page.runs) == 1


async def test_keyset_pagination_newest_first(store: Store) -> None:
    ids = [(await store.insert_run(make_run()))[0].id for _ in range(7)]
    seen, cursor = [], None
    while True:
        page = await store.list_runs(RunFilter(limit=3, cursor=cursor))
        seen += [r.id for r in page.runs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == sorted(ids, reverse=True)


async def test_a_page_of_large_runs_ends_at_its_byte_bound_and_the_next_goes_on(
    store: Store,
) -> None:
    """A probe: 300 runs of 1 MB params made one 286 MB page (7 s). A page ends once its
    runs' stored JSON passes PAGE_BYTES, at least one run in it; its cursor goes on from
    there, no run left out or shown twice."""
    big = "x" * (PAGE_BYTES // 3 - 100)  # three fit (with their JSON around), a fourth not
    ids = [(await store.insert_run(replace(make_run(), params={"s": big})))[0].id for _ in range(7)]
    huge = (await store.insert_run(replace(make_run(), params={"s": big * 4})))[0].id  # alone
    pages, cursor = [], None
    while True:
        page = await store.list_runs(RunFilter(limit=100, cursor=cursor))
        pages.append([r.id for r in page.runs])
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    newest_first = sorted([*ids, huge], reverse=True)
    assert [len(p) for p in pages] == [1, 3, 3, 1]
    assert [i for p in pages for i in p] == newest_first


async def test_filters(store: Store) -> None:
    a = (await store.insert_run(make_run("a", labels={"env": "prod"})))[0]
    await store.insert_run(make_run("b", labels={"env": "dev"}))
    assert [r.id for r in (await store.list_runs(RunFilter(job="a"))).runs] == [a.id]
    by_label = await store.list_runs(RunFilter(labels=(("env", "prod"),)))
    assert [r.id for r in by_label.runs] == [a.id]
    assert (await store.list_runs(RunFilter(state=RunState.RUNNING))).runs == []
    assert await store.count_runs(RunState.QUEUED) == 2
    assert await store.count_runs(RunState.QUEUED, "a") == 1


async def test_claim_order_priority_then_fifo(store: Store) -> None:
    low = (await store.insert_run(make_run(priority=0)))[0]
    high1 = (await store.insert_run(make_run(priority=5)))[0]
    high2 = (await store.insert_run(make_run(priority=5)))[0]
    claims = await store.claim(3, {}, now=2000.0, host="h")
    assert [c.run.id for c in claims] == [high1.id, high2.id, low.id]
    for c in claims:
        assert c.run.state is RunState.RUNNING
        assert c.run.attempt == 1
        assert c.attempt.state is AttemptState.STARTING
    assert await store.claim(3, {}, now=2000.0, host="h") == []
    assert sorted(job for _, job in await store.held_attempts("h")) == ["j", "j", "j"]


async def test_a_claim_takes_its_limit_and_no_more(store: Store) -> None:
    """One statement picks and takes the runs (no job's limit in play): picked once, never
    again per row taken (a subquery's LIMIT re-run per row took every queued run)."""
    runs = [(await store.insert_run(make_run(priority=p)))[0] for p in (0, 0, 3, 0, 3)]
    claims = await store.claim(2, {}, now=2000.0, host="h")
    assert [c.run.id for c in claims] == [runs[2].id, runs[4].id]
    assert await store.count_runs(RunState.QUEUED, None) == 3
    (next_one,) = await store.claim(1, {}, now=2000.0, host="h")
    assert next_one.run.id == runs[0].id


async def test_claim_respects_job_slots_without_blocking_other_jobs(store: Store) -> None:
    for _ in range(5):
        await store.insert_run(make_run("flood"))
    other = (await store.insert_run(make_run("other")))[0]
    claims = await store.claim(4, {"flood": 1}, now=2000.0, host="h")
    jobs = sorted(c.run.job for c in claims)
    assert jobs == ["flood", "other"]
    assert other.id in {c.run.id for c in claims}
    assert await store.claim(4, {"flood": 0}, now=2000.0, host="h") == []


async def test_end_attempt_once_and_transitions(store: Store) -> None:
    run = (await store.insert_run(make_run()))[0]
    (claim,) = await store.claim(1, {}, now=2000.0, host="h")
    await store.attempt_started(run.id, 1, pid=42, pgid=42, proc_start_time=1.5, at=2000.5)
    assert [a.key for a in await store.active_attempts()] == [claim.attempt.key]
    ended = await store.end_attempt(run.id, 1, succeeded())
    assert ended is not None
    assert ended.state is RunState.SUCCEEDED
    assert ended.exit_code == 0
    assert ended.finished_at == 2000.0
    assert await store.end_attempt(run.id, 1, succeeded()) is None  # learned twice: no-op
    (attempt,) = await store.get_attempts(run.id)
    assert attempt.state is AttemptState.EXITED
    assert attempt.pid == 42
    assert await store.active_attempts() == []


async def test_retry_goes_back_to_queue_with_not_before(store: Store) -> None:
    run = (await store.insert_run(make_run()))[0]
    await store.claim(1, {}, now=2000.0, host="h")
    retry = AttemptEnd(
        attempt_state=AttemptState.EXITED, ended_at=2001.0, run_state=RunState.QUEUED,
        reason="exit code 1; retrying", outcome="exit", exit_code=1, not_before=2010.0,
    )  # fmt: skip
    queued = await store.end_attempt(run.id, 1, retry)
    assert queued is not None
    assert queued.state is RunState.QUEUED
    assert queued.finished_at is None
    assert await store.next_due(2005.0) == 2010.0
    assert await store.next_due(2010.0) is None  # claimable now: no timer needed for it
    assert await store.claim(1, {}, now=2005.0, host="h") == []  # still backing off
    (claim,) = await store.claim(1, {}, now=2010.0, host="h")
    assert claim.run.attempt == 2
    assert claim.run.not_before is None
    assert [a.number for a in await store.get_attempts(run.id)] == [1, 2]
    # it runs again: the last attempt's end is not the run's (a probe: a client polling
    # `exit_code` took the retry under way for a run over), whichever way it was claimed
    stored = await store.get_run(run.id)
    assert stored is not None
    for seen in (claim.run, stored):
        assert (seen.exit_code, seen.reason) == (None, None)
    await store.end_attempt(run.id, 2, replace(retry, ended_at=2011.0, not_before=2012.0))
    (limited,) = await store.claim(1, {run.job: 1}, now=2012.0, host="h")  # a job's limit
    assert (limited.run.attempt, limited.run.exit_code, limited.run.reason) == (3, None, None)


async def test_a_retry_of_a_run_whose_cancel_was_accepted_meanwhile_ends_it_cancelled(
    store: Store,
) -> None:
    """The end's caller read the run before its cancel was accepted: the store, which reads
    the flag under the run's lock, ends it cancelled rather than queue it to run again."""
    run = (await store.insert_run(make_run()))[0]
    await store.claim(1, {}, now=2000.0, host="h")
    assert await store.request_cancel(run.id) is not None
    retry = AttemptEnd(
        attempt_state=AttemptState.LOST, ended_at=2001.0, run_state=RunState.QUEUED,
        reason="lost: its server went; retrying", outcome="lost", not_before=2010.0,
    )  # fmt: skip
    ended = await store.end_attempt(run.id, 1, retry)
    assert ended is not None and ended.state is RunState.CANCELLED
    assert ended.finished_at == 2001.0 and ended.not_before is None
    assert ended.reason == "cancelled on request (lost: its server went; retrying)"
    assert await store.claim(1, {}, now=2020.0, host="h") == []  # never runs again
    assert (await store.get_attempts(run.id))[0].state is AttemptState.LOST


async def test_cancel_and_delete_only_in_the_right_states(store: Store) -> None:
    queued = (await store.insert_run(make_run()))[0]
    running = (await store.insert_run(make_run()))[0]
    await store.claim(1, {}, now=2000.0, host="h")  # takes `queued` (older)
    # `queued` is now running; the other one is still queued
    assert await store.cancel_queued(queued.id, 2001.0, "r") is None
    cancelled = await store.cancel_queued(running.id, 2001.0, "cancelled on request")
    assert cancelled is not None
    assert cancelled.state is RunState.CANCELLED
    flagged = await store.request_cancel(queued.id)
    assert flagged is not None
    assert flagged.cancel_requested
    assert await store.request_cancel(running.id) is None  # terminal: nothing to flag
    assert not await store.delete_run(queued.id)  # running: refused
    assert await store.delete_run(running.id)
    assert await store.get_run(running.id) is None


async def test_a_batchs_queued_runs_are_cancelled_together_and_the_rest_left_as_they_are(
    store: Store,
) -> None:
    """A batch's cancel: every run of it still queued, in one statement; one that runs, one
    of another batch, and one that ended are left as they are."""
    batch = Batch(id=new_id(), job="j", size=3, created_at=1000.0, request={})
    runs = [make_run(batch_id=batch.id) for _ in range(3)]
    await store.insert_batch(batch, runs)
    other = (await store.insert_run(make_run()))[0]
    (claimed,) = await store.claim(1, {}, now=2000.0, host="h")
    assert claimed.run.id == runs[0].id
    cancelled = await store.cancel_queued_of_batch(batch.id, 2001.0, "cancelled on request")
    assert sorted((r.id, r.state, r.finished_at, r.reason) for r in cancelled) == sorted(
        (r.id, RunState.CANCELLED, 2001.0, "cancelled on request") for r in runs[1:]
    )
    for run_id, state in ((runs[0].id, RunState.RUNNING), (other.id, RunState.QUEUED)):
        assert (await store.get_run(run_id)).state is state  # type: ignore[union-attr]
    (_, event) = await store.list_events(runs[1].id, 0)
    assert (event.seq, event.at, event.data["to"]) == (2, 2001.0, "cancelled")
    assert await store.cancel_queued_of_batch(batch.id, 2002.0, "again") == []


async def test_progress(store: Store) -> None:
    run = (await store.insert_run(make_run()))[0]
    await store.set_progress(run.id, {"fraction": 0.5, "message": "half"})
    got = await store.get_run(run.id)
    assert got is not None
    assert got.progress == {"fraction": 0.5, "message": "half"}


async def test_reopen_keeps_data_and_migrations_are_idempotent(store: Store) -> None:
    run = (await store.insert_run(make_run()))[0]
    await store.open()  # applying migrations again must change nothing
    assert await store.get_run(run.id) == run
    await store.ping()


async def test_full_database_refuses_writes_and_keeps_reads(store: Store) -> None:
    from runyard.errors import StorageFullError
    from runyard.store.sqlite import SQLiteStore

    if not isinstance(store, SQLiteStore):
        pytest.skip("the way to fill the database is backend-specific")
    run = (await store.insert_run(make_run()))[0]
    # cap the file at its current size: the next page it needs makes SQLite report SQLITE_FULL
    await store._call(lambda c: c.execute("PRAGMA max_page_count = 1"), "test")
    with pytest.raises(StorageFullError):
        for _ in range(200):
            await store.insert_run(make_run(labels={"pad": "x" * 200}))
    assert await store.get_run(run.id) == run


async def test_a_page_of_events_is_bounded_in_bytes_as_asked(store: Store) -> None:
    """A watcher holds its page: 1,000 progress events of 16 KiB were 16 MiB a watcher that
    did not read (a probe). A page stops once its events' data reaches `max_bytes`, one
    event at least, and the pages still hold every event in order."""
    run = (await store.insert_run(make_run()))[0]
    await store.claim(1, {}, now=2000.0, host="h")
    big = [(2000.0 + i / 100, {"i": i, "blob": "x" * 10_000}) for i in range(30)]
    await store.add_progress(run.id, 1, big, offset=10, skipped=0)
    pages, after = [], 0
    while page := await store.list_events(run.id, after, 1000, 50_000):
        pages.append(page)
        after = page[-1].seq
    assert [e.seq for page in pages for e in page] == list(range(1, 33))
    for page in pages:
        progress = [e for e in page if e.kind == "progress"]
        assert len(progress) <= 6, [len(p) for p in pages]  # 5 reach 50,000 bytes; one more
    assert len(await store.list_events(run.id, 0, 1000)) == 32  # unbounded: as before
    assert len(await store.list_events(run.id, 0, 1000, 1)) == 1  # one at least


async def test_state_changes_and_progress_are_numbered_events(store: Store) -> None:
    run = (await store.insert_run(make_run()))[0]
    await store.claim(1, {}, now=2000.0, host="h")
    await store.add_progress(
        run.id, 1, [(2000.1, {"fraction": 0.5}), (2000.2, {"fraction": 1.0})], offset=40, skipped=2
    )
    await store.end_attempt(run.id, 1, succeeded(2001.0))
    events = await store.list_events(run.id, after=0)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [(e.kind, e.data.get("to")) for e in events] == [
        ("state", "queued"), ("state", "running"), ("progress", None), ("progress", None),
        ("state", "succeeded"),
    ]  # fmt: skip
    assert events[2].data == {"fraction": 0.5, "attempt": 1}
    assert [e.seq for e in await store.list_events(run.id, after=3)] == [4, 5]
    assert await store.last_event_seq(run.id) == 5
    got = await store.get_run(run.id)
    assert got is not None
    assert got.progress == {"fraction": 1.0}
    assert got.progress_skipped == 2
    assert await store.progress_offset(run.id, 1) == 40


async def test_a_runs_progress_events_stop_at_the_cap_and_its_latest_progress_does_not(
    store: Store,
) -> None:
    run = (await store.insert_run(make_run()))[0]
    await store.claim(1, {}, now=2000.0, host="h")  # two state events so far
    many = [(2000.0, {"i": i}) for i in range(MAX_RUN_EVENTS)]
    await store.add_progress(run.id, 1, many, offset=10, skipped=0)
    assert await store.last_event_seq(run.id) == MAX_RUN_EVENTS
    kept = [e for e in await store.list_events(run.id, 0, MAX_RUN_EVENTS) if e.kind == "progress"]
    assert [e.data["i"] for e in kept] == list(range(2, MAX_RUN_EVENTS))  # the latest ones
    await store.add_progress(run.id, 1, [(2001.0, {"i": "after"})], offset=20, skipped=1)
    assert await store.last_event_seq(run.id) == MAX_RUN_EVENTS  # no event past the cap
    got = await store.get_run(run.id)
    assert got is not None and got.progress == {"i": "after"} and got.progress_skipped == 1
    assert await store.progress_offset(run.id, 1) == 20
    await store.end_attempt(run.id, 1, succeeded(2002.0))  # state changes are still told
    assert await store.last_event_seq(run.id) == MAX_RUN_EVENTS + 1


async def test_a_runs_progress_events_stop_at_their_bytes_and_its_latest_progress_does_not(
    store: Store,
) -> None:
    """A probe: 10,000 lines of 64 KiB each, stored while anyone watched, were 640 MB of one
    run's events (the count was bounded, their size was not)."""
    run = (await store.insert_run(make_run()))[0]
    await store.claim(1, {}, now=2000.0, host="h")
    pad = "x" * 60_000
    lines = [(2000.0, {"i": i, "pad": pad}) for i in range(400)]
    await store.add_progress(run.id, 1, lines, offset=10, skipped=0)
    sizes = [len(fastjson.dumps(data | {"attempt": 1})) for _, data in lines]
    fits = max(n for n in range(len(sizes) + 1) if sum(sizes[:n]) <= MAX_RUN_PROGRESS_BYTES)
    assert 0 < fits < len(lines)
    kept = [e for e in await store.list_events(run.id, 0, 1000) if e.kind == "progress"]
    assert [e.data["i"] for e in kept] == list(range(fits))
    seq = await store.last_event_seq(run.id)
    await store.add_progress(
        run.id, 1, [(2001.0, {"i": "after", "pad": pad})], offset=20, skipped=0
    )
    assert await store.last_event_seq(run.id) == seq  # no progress event past its share
    got = await store.get_run(run.id)
    assert got is not None and got.progress == {"i": "after", "pad": pad}
    await store.end_attempt(run.id, 1, succeeded(2002.0))  # state changes are still told
    assert await store.last_event_seq(run.id) == seq + 1


async def test_postgres_migrations_run_once_when_servers_start_together() -> None:
    import asyncio
    import uuid

    import psycopg

    from runyard.store.postgres import PostgresStore
    from tests.integration.conftest import POSTGRES

    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    stores = [PostgresStore(POSTGRES, schema=schema, max_size=2) for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))  # all at once: one migrates
        with psycopg.connect(POSTGRES, autocommit=True, options=f"-c search_path={schema}") as c:
            versions = [r[0] for r in c.execute("SELECT version FROM schema_migrations")]
        assert versions == sorted(set(versions))
        await stores[0].insert_run(make_run())
        assert (await stores[3].list_runs(RunFilter())).runs
    finally:
        for s in stores:
            await s.close()
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


async def test_starts_are_recorded_in_one_batch_and_never_undo_an_end(store: Store) -> None:
    a = (await store.insert_run(make_run()))[0]
    b = (await store.insert_run(make_run()))[0]
    await store.claim(2, {}, now=2000.0, host="h")
    await store.end_attempt(b.id, 1, succeeded(2001.0))  # b ended before its start was written
    await store.attempts_started([(a.id, 1, 11, 11, 1.0, 2000.5), (b.id, 1, 22, 22, 1.0, 2000.6)])
    (att_a,) = await store.get_attempts(a.id)
    (att_b,) = await store.get_attempts(b.id)
    assert (att_a.state, att_a.pid) == (AttemptState.RUNNING, 11)
    assert (att_b.state, att_b.pid) == (AttemptState.EXITED, 42)  # the end's record stands


async def test_batches_are_listed_newest_first_in_pages(store: Store) -> None:
    ids = []
    for _ in range(5):
        batch = Batch(new_id(), "j", 1, 1000.0, {"job": "j"})
        await store.insert_batch(batch, [make_run(batch_id=batch.id)])
        ids.append(batch.id)
    first = await store.list_batches(None, 3)
    assert [b.id for b in first] == ids[::-1][:3]
    rest = await store.list_batches(first[-1].id, 3)
    assert [b.id for b in rest] == ids[::-1][3:]
    assert rest[0].request == {"job": "j"}


async def test_a_batch_key_taken_answers_the_batch_that_took_it_and_stores_nothing(
    store: Store,
) -> None:
    first = Batch(new_id(), "j", 1, 1000.0, {"iterations": 1}, idempotency_key="bk")
    assert await store.insert_batch(first, [make_run(batch_id=first.id)]) == (first, True)
    again = Batch(new_id(), "j", 2, 1001.0, {"iterations": 2}, idempotency_key="bk")
    stored, created = await store.insert_batch(again, [make_run(batch_id=again.id)] * 2)
    assert (stored, created) == (first, False)
    assert await store.get_batch(again.id) is None
    assert await store.batch_counts(again.id) == {}  # none of its runs either
    assert await store.get_batch_by_key("bk") == first
    assert await store.get_batch_by_key("other") is None
    keyless = [Batch(new_id(), "j", 0, 1002.0, {}) for _ in range(2)]  # NULLs never conflict
    assert [(await store.insert_batch(b, []))[1] for b in keyless] == [True, True]


async def test_a_lease_is_renewed_under_its_token_and_fences_when_it_lapses(
    store: Store,
) -> None:
    first, replaced = await store.register_server("a", "http://a", 4, now=995.0, lease_s=10)
    assert replaced is None
    # a restart within the lease is a new life all the same: the first can renew no more
    token, replaced = await store.register_server("a", "http://a", 4, now=1000.0, lease_s=10)
    assert token != first and replaced == 1005.0
    assert not await store.renew_server("a", first, now=1001.0, lease_s=10)
    assert await store.renew_server("a", token, now=1005.0, lease_s=10)
    assert await store.renew_server("a", token, now=1010.0, lease_s=10)
    assert [s.id for s in await store.live_servers(now=1015.0)] == ["a"]
    assert not await store.renew_server("a", "stale", now=1015.0, lease_s=10)
    # a's lease lapses; b reaps a's attempt; a comes back and cannot write it any more
    run = (await store.insert_run(make_run()))[0]
    (claim,) = await store.claim(1, {}, now=1016.0, host="a", token=token)
    assert claim.attempt.lease_token == token
    assert await store.orphaned_attempts(now=1019.0) == []
    assert [a.key for a in await store.orphaned_attempts(now=1021.0)] == [claim.attempt.key]
    assert not await store.renew_server("a", token, now=1021.0, lease_s=10)
    lost = AttemptEnd(
        attempt_state=AttemptState.LOST, ended_at=1022.0, run_state=RunState.QUEUED,
        reason="its server's lease expired", outcome="lost",
    )  # fmt: skip
    assert await store.end_attempt(run.id, 1, lost, token=token) is not None
    fresh, replaced = await store.register_server("a", "http://a", 4, now=1023.0, lease_s=10)
    assert fresh != token and replaced == 1020.0
    assert await store.end_attempt(run.id, 1, succeeded(1024.0), token=fresh) is None
    got = await store.get_run(run.id)
    assert got is not None and got.state is RunState.QUEUED


async def test_a_server_back_after_its_lease_takes_back_attempts_nobody_reaped(
    store: Store,
) -> None:
    token, _ = await store.register_server("solo", "http://s", 2, now=1000.0, lease_s=10)
    run = (await store.insert_run(make_run()))[0]
    await store.claim(1, {}, now=1001.0, host="solo", token=token)
    assert await store.held_attempts("solo") == [(f"{run.id}.1", "j")]
    assert await store.held_attempts("other") == []
    fresh, _ = await store.register_server("solo", "http://s", 2, now=2000.0, lease_s=10)
    (attempt,) = await store.active_attempts("solo")
    assert attempt.lease_token == fresh != token
    assert await store.active_attempts("other") == []
    assert await store.orphaned_attempts(now=2001.0) == []
    assert await store.end_attempt(run.id, 1, succeeded(2002.0), token=fresh) is not None


def ask(limit: int = 1, room: dict[str, int] | None = None, token: str | None = None) -> ClaimAsk:
    return ClaimAsk(limit=limit, room=room or {}, now=2000.0, host="h", token=token, generation=0)


async def test_an_end_claims_what_takes_its_slot_in_its_own_transaction(store: Store) -> None:
    ending = (await store.insert_run(make_run()))[0]
    await store.claim(1, {}, now=2000.0, host="h")
    waiting = [(await store.insert_run(make_run()))[0] for _ in range(2)]
    ended, claims = await store.end_and_claim(ending.id, 1, succeeded(), None, ask())
    assert ended is not None and ended.state is RunState.SUCCEEDED
    assert [c.run.id for c in claims] == [waiting[0].id]  # the oldest; one slot freed
    assert claims[0].run.state is RunState.RUNNING and claims[0].attempt.host == "h"
    assert [a.state for a in await store.get_attempts(waiting[0].id)] == [AttemptState.STARTING]
    # learned twice, or a job with no room left: the end changes nothing, or claims nothing
    assert await store.end_and_claim(ending.id, 1, succeeded(), None, ask()) == (None, [])
    (claim,) = await store.claim(1, {}, now=2000.0, host="h")
    assert claim.run.id == waiting[1].id
    await store.insert_run(make_run())
    ended, claims = await store.end_and_claim(waiting[0].id, 1, succeeded(), None, ask(2, {"j": 0}))
    assert ended is not None and claims == []
    assert await store.count_runs(RunState.QUEUED) == 1


async def test_a_fenced_or_failed_end_claims_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = "lease-1", "lease-2"
    ending = (await store.insert_run(make_run()))[0]
    (held,) = await store.claim(1, {}, now=2000.0, host="h", token=old)
    waiting = (await store.insert_run(make_run()))[0]
    fenced = await store.end_and_claim(ending.id, 1, succeeded(), new, ask(token=new))
    assert fenced == (None, [])
    monkeypatch.setattr(failpoints, "_STATE", failpoints._Failpoints("store_commit=eio"))
    with pytest.raises(StorageIOError):
        await store.end_and_claim(ending.id, 1, succeeded(), old, ask(token=old))
    monkeypatch.setattr(failpoints, "_STATE", failpoints._Failpoints(None))
    assert (await store.get_run(waiting.id)).state is RunState.QUEUED  # type: ignore[union-attr]
    assert (await store.get_run(ending.id)).state is RunState.RUNNING  # type: ignore[union-attr]
    assert [a.key for a in await store.active_attempts()] == [held.attempt.key]


def _damage_labels(store: Store, run_id: str) -> None:
    """The run's labels rewritten behind the store's back as a JSON array (no object)."""
    import sqlite3

    import psycopg

    from runyard.store.postgres import PostgresStore
    from runyard.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute("UPDATE runs SET labels = '[1]' WHERE id = ?", (run_id,))
        return
    assert isinstance(store, PostgresStore)
    options = f"-c search_path={store.schema}"  # the test's own schema
    with psycopg.connect(store.dsn, autocommit=True, options=options) as conn:
        conn.execute("UPDATE runs SET labels = '[1]' WHERE id = %s", (run_id,))


@pytest.mark.parametrize("room", [{}, {"j": 5}], ids=["one-statement", "by-job"])
async def test_a_damaged_queued_run_is_failed_by_its_claim_and_the_next_one_taken(
    store: Store, room: dict[str, int]
) -> None:
    """A row no longer read back as a run (a probe: its claim failed, was undone and tried
    again for ever, the runs behind it never taken) fails alone: its claim fails it, naming
    the column, takes the next, and listings leave it out."""
    from runyard.errors import RecordDamagedError

    damaged = (await store.insert_run(make_run(created=1000.0)))[0]
    fine = (await store.insert_run(make_run(created=1001.0)))[0]
    _damage_labels(store, damaged.id)
    claims = await store.claim(1, room, 3000.0, "h")
    assert [c.run.id for c in claims] == [fine.id]
    with pytest.raises(RecordDamagedError, match=r"labels: not a JSON object"):
        await store.get_run(damaged.id)
    assert [r.id for r in (await store.list_runs(RunFilter())).runs] == [fine.id]
    assert await store.claim(5, room, 3001.0, "h") == []  # failed: never taken again
    assert await store.count_runs(RunState.FAILED, None) == 1
