"""The store contract, continued: what servers sharing a database hear and hold (notifications,
leadership), readiness after a failed write, and a suite that leaves no method out."""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import psycopg
import pytest

from runyard import failpoints
from runyard.clock import new_id
from runyard.errors import (
    ScheduleLimitError,
    ServerIdTakenError,
    StorageFullError,
    StorageIOError,
)
from runyard.models import AttemptEnd, AttemptState, RunFilter, RunState
from runyard.store import Store
from runyard.store.logic import QUEUE_CHANNEL, RUN_CHANNEL, SCHEDULES_CHANNEL
from runyard.store.postgres import PostgresStore
from runyard.store.rows import SCHEDULE_WRITTEN
from runyard.store.sqlite import SQLiteStore
from tests.integration.conftest import POSTGRES
from tests.integration.test_store_contract import make_run
from tests.integration.test_store_contract_records import make_schedule
from tests.support import wait_for

pytestmark = pytest.mark.anyio


def shared(store: Store) -> bool:
    """Whether several servers can use this store's database (a SQLite file has one)."""
    return not isinstance(store, SQLiteStore)


async def test_listen_hears_what_other_servers_change(store: Store, peer: Store) -> None:
    heard: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    channels = (QUEUE_CHANNEL, RUN_CHANNEL, SCHEDULES_CHANNEL)

    def handler(channel: str) -> Callable[[str], None]:
        return lambda payload: heard.put_nowait((channel, payload))

    await store.listen({channel: handler(channel) for channel in channels})
    if not shared(store):  # nobody else to hear from: no handler is ever called
        await peer.insert_run(make_run())
        assert heard.empty()
        return

    async def next_heard() -> tuple[str, str]:
        return await asyncio.wait_for(heard.get(), timeout=10)

    # once connected, every handler is called with "" (what was said while not listening);
    # the listening session connects in the background, so the peer speaks only after that
    assert sorted([await next_heard() for _ in channels]) == sorted((c, "") for c in channels)
    run = (await peer.insert_run(make_run()))[0]
    assert await next_heard() == (QUEUE_CHANNEL, "")  # the peer's submission
    await peer.claim(1, {}, now=2000.0, host="peer")
    retry = AttemptEnd(
        attempt_state=AttemptState.EXITED, ended_at=2001.0, run_state=RunState.QUEUED,
        reason="exit code 1; retrying", outcome="exit", exit_code=1,
    )  # fmt: skip
    await peer.end_attempt(run.id, 1, retry)
    assert await next_heard() == (RUN_CHANNEL, f"{run.id} queued peer")
    assert await next_heard() == (QUEUE_CHANNEL, "")  # a retry: anyone may take it
    await peer.claim(1, {}, now=2002.0, host="peer")
    await peer.end_attempt(run.id, 2, retry, by="reaper")  # another server reaped it:
    assert await next_heard() == (RUN_CHANNEL, f"{run.id} queued reaper")  # named, not "peer"
    assert await next_heard() == (QUEUE_CHANNEL, "")
    schedule = make_schedule()
    await peer.save_schedule(schedule)
    assert await next_heard() == (SCHEDULES_CHANNEL, schedule.id)


_COPY = f"INSERT INTO schedules ({SCHEDULE_WRITTEN}) SELECT {SCHEDULE_WRITTEN.replace('id,', '%s,', 1)} FROM schedules LIMIT 1"  # noqa: S608, E501


async def _created_while_another_creates(store: Store, peer: Store) -> asyncio.Future[None]:
    """`peer`'s create, started while another server's (a fifth) is under way on PostgreSQL,
    which is committed once the first waits for it (or has ended: the old code's did)."""
    schema = cast(PostgresStore, store).schema
    with psycopg.connect(POSTGRES, options=f"-c search_path={schema}") as other:
        other.execute(_COPY, (new_id(),))
        racing = asyncio.ensure_future(peer.save_schedule(make_schedule(), at_most=5))

        def waiting_or_done() -> bool:
            with psycopg.connect(POSTGRES) as watch:
                waits = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                ).fetchone()
            return racing.done() or bool(waits and waits[0])

        await asyncio.to_thread(wait_for, waiting_or_done, 30, "the create to wait, or end")
        other.commit()
    return racing


async def test_a_schedule_created_while_another_server_creates_one_counts_it(
    store: Store, peer: Store
) -> None:
    """A probe: two servers on one database each counted the schedules they held and both
    created the last one allowed (6 stored of `max_schedules` 5). Another server's create,
    not committed yet, is waited for and counted."""
    for _ in range(4):
        await store.save_schedule(make_schedule(), at_most=5)
    if shared(store):
        racing = await _created_while_another_creates(store, peer)
    else:  # one file: another connection's create holds the write lock, then commits
        other = sqlite3.connect(cast(SQLiteStore, store).path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute(_COPY.replace("%s", "?"), (new_id(),))
            racing = asyncio.ensure_future(peer.save_schedule(make_schedule(), at_most=5))
            await asyncio.sleep(0)  # its turn handed to the store's thread, which waits
            other.execute("COMMIT")
        finally:
            other.close()
    with pytest.raises(ScheduleLimitError) as refused:
        await racing
    assert refused.value.extra["limit"] == 5
    assert len(await peer.list_schedules()) == 5


async def test_one_server_at_a_time_fires_schedules(
    store_factory: Callable[[], Store], peer: Store
) -> None:
    leader = store_factory()
    await leader.open()
    try:
        assert await leader.try_lead()
        assert await leader.try_lead()  # and keeps leading
        if not shared(leader):  # one server per database: it always leads
            assert await peer.try_lead()
            return
        assert not await peer.try_lead()
    finally:
        await leader.close()
    assert await peer.try_lead()  # the leader's session ended: another takes over


async def test_a_leader_whose_life_is_over_is_replaced_and_one_standing_down_lets_go(
    store_factory: Callable[[], Store], peer: Store
) -> None:
    """A leader's session is named for its life (its lease token): replaced once another life
    of its id registered, though the id's lease is live (a probe: a paused leader kept the
    lock while a replacement host renewed the id's lease, and nothing fired)."""
    leader = store_factory()
    await leader.open()
    try:
        old, _ = await peer.register_server("a", "http://a", 4, time.time(), 60, instance="i")
        assert await leader.try_lead("a", old)
        if not shared(leader):  # one server per database: it always leads
            await leader.stand_down()
            assert await peer.try_lead("b")
            return
        assert not await peer.try_lead("b")  # a live life's leader holds on
        await peer.register_server("a", "http://a2", 4, time.time(), 60, instance="i")
        assert await peer.try_lead("b")  # the old life's session ended, the lock taken
        assert not await leader.try_lead("a", old)  # back, it stands by
        await peer.stand_down()
    finally:
        await leader.close()
    other = store_factory()
    await other.open()
    try:
        assert await other.try_lead("c")  # the one that stood down let go at once
    finally:
        await other.close()


async def test_what_one_store_wrote_another_reads_once_it_closed(
    store_factory: Callable[[], Store], store: Store
) -> None:
    writer = store_factory()
    await writer.open()
    run = (await writer.insert_run(make_run()))[0]
    await writer.close()
    assert await store.get_run(run.id) == run


async def test_a_failed_write_changes_nothing_and_is_reported_until_writes_work(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = (await store.insert_run(make_run()))[0]
    assert await store.health_problems() == {}
    armed = failpoints._Failpoints("store_commit=eio,progress=enospc")
    monkeypatch.setattr(failpoints, "_STATE", armed)
    with pytest.raises(StorageIOError):
        await store.insert_run(make_run())
    with pytest.raises(StorageFullError):
        await store.add_progress(run.id, 1, [(1.0, {"fraction": 0.5})], offset=9, skipped=0)
    assert [r.id for r in (await store.list_runs(RunFilter())).runs] == [run.id]  # reads work
    assert await store.last_event_seq(run.id) == 1
    problems = await store.health_problems()
    assert set(problems) == {"store"}
    assert "Input/output error" in problems["store"]
    assert "No space left on device" in problems["store"]
    monkeypatch.setattr(failpoints, "_STATE", failpoints._Failpoints(None))
    assert await store.health_problems() == {}  # the probe's write went through: cleared


async def test_a_new_life_takes_every_attempt_of_its_id_and_stands_off_the_one_it_replaced(
    store: Store,
) -> None:
    """A registration within a live lease (a restart of the same instance, or a copy of its
    data directory) is a new life: a token of its own, never the live one (two processes then
    renewed one lease for ever, nothing fencing either). What the replaced process claimed
    before it heard is reaped only once the lease it held has ended, as any lapsed lease's."""
    old, _ = await store.register_server("a", "http://a", 4, 1000.0, 10, instance="i")
    taken = (await store.insert_run(make_run()))[0]
    await store.claim(1, {}, now=1001.0, host="a", token=old)
    new, replaced = await store.register_server("a", "http://a2", 4, 1002.0, 10, instance="i")
    assert new != old and replaced == 1010.0
    assert [(a.run_id, a.lease_token) for a in await store.active_attempts("a")] == [
        (taken.id, new)
    ]
    assert not await store.renew_server("a", old, now=1003.0, lease_s=10)
    late = (await store.insert_run(make_run()))[0]
    (claim,) = await store.claim(1, {}, now=1003.0, host="a", token=old)  # not heard yet
    assert await store.orphaned_attempts(now=1009.0) == []  # its lease lasts until 1010
    assert [a.run_id for a in await store.orphaned_attempts(now=1010.0)] == [late.id]
    # the replaced process may not take the id back while the new life's lease lasts
    with pytest.raises(ServerIdTakenError, match="taken over by another process"):
        await store.register_server("a", "http://a", 4, 1004.0, 10, instance="i", holding=old)
    # once it has lapsed, it may: a new life again, holding all of the id's attempts
    back, replaced = await store.register_server(
        "a", "http://a", 4, 1013.0, 10, instance="i", holding=old
    )
    assert back not in (old, new) and replaced == 1012.0
    assert {a.lease_token for a in await store.active_attempts("a")} == {back}
    assert claim.attempt.key in {a.key for a in await store.active_attempts("a")}
    # another instance is refused while a live lease is held
    with pytest.raises(ServerIdTakenError, match="held by another live process"):
        await store.register_server("a", "http://b", 4, 1014.0, 10, instance="j")


def test_every_store_method_is_in_the_contract_suite() -> None:
    suite = "".join(p.read_text() for p in Path(__file__).parent.glob("test_store_contract*.py"))
    methods = [n for n, _ in inspect.getmembers(Store, inspect.isfunction) if n[0] != "_"]
    assert [m for m in methods if f".{m}(" not in suite] == []
