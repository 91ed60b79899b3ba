"""An attempt's end claims what takes its slot in its own transaction (Dispatcher.ask/settle):
under load the dispatcher makes no claim of its own, and the limits it keeps still hold —
a job's concurrency edited in its file, a capacity lowered across a restart, a claim that
skipped rows on PostgreSQL, a dispatcher stopping with an end under way."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.inprocess import FakedServer, faked
from tests.integration.conftest import POSTGRES
from tests.integration.test_dispatch_inprocess import counting_claims, plain_jobs
from tests.support import wait_for

REFRESH_S = 0.05  # how often the job files are looked at again, here


def running(srv: FakedServer) -> int:
    srv.settle()
    return len(srv.executor.running_keys())


def end_one(srv: FakedServer) -> None:
    """The attempt launched first among those running ends, and is recorded (one running
    first: a slot freed by the end before may be taken by the dispatcher's own claim, which
    crosses threads that a settled loop has not waited for)."""
    keys = wait_for(srv.executor.running_keys, what="an attempt running")
    run_id = keys[0].split(".")[0]
    srv.finish(run_id)
    wait_for(lambda: srv.run(run_id)["state"] == "succeeded", what="the end recorded")


def job_files(tmp_path: Path, **jobs: str) -> Path:
    directory = tmp_path / "jobs"
    directory.mkdir()
    for name, text in jobs.items():
        (directory / f"{name}.toml").write_text(text)
    return directory


def past_refresh() -> None:
    """Job files read again from now on (their rescan is due)."""
    time.sleep(REFRESH_S * 2)


def test_under_load_each_end_claims_the_run_that_takes_its_slot(tmp_path: Path) -> None:
    # An end claims only while the job files' last scan is fresh (an older one must be
    # refreshed first, by a claim of the dispatcher's own): fresh for the whole test, however
    # slow the machine, so that every end here may claim.
    with faked(tmp_path, plain_jobs(tmp_path), capacity=2, jobs_refresh_s=3600) as srv:
        ids = [srv.submit("mark")["id"] for _ in range(6)]
        wait_for(lambda: running(srv) == 2, what="both slots taken")
        own = counting_claims(srv, "claim")
        by_ends = counting_claims(srv, "end_and_claim")
        for n in range(4):
            end_one(srv)
            wait_for(lambda n=n: len(srv.launched()) == 3 + n, what="the next run launched")
        assert (own[0], by_ends[0]) == (0, 4)
        launched = srv.launched()  # oldest first, as the dispatcher takes them; the first
        # two launch side by side, and either may be recorded first
        assert set(launched[:2]) == set(ids[:2]) and launched[2:] == ids[2:]


def test_a_concurrency_limit_written_into_a_job_file_holds(tmp_path: Path) -> None:
    jobs = job_files(tmp_path, j='command = ["true"]\n')
    with faked(tmp_path, jobs, capacity=3, jobs_refresh_s=REFRESH_S) as srv:
        for _ in range(12):
            srv.submit("j")
        wait_for(lambda: running(srv) == 3, what="three running")
        (jobs / "j.toml").write_text('command = ["true"]\nconcurrency = 1\n')
        past_refresh()
        seen = []
        for i in range(5):
            end_one(srv)
            if i >= 2:  # the slot freed is taken again (runs are queued), never two of them
                wait_for(lambda: running(srv) >= 1, what="the freed slot taken")
            seen.append(running(srv))
        assert seen[:2] == [2, 1] and max(seen[2:]) == 1, seen


def test_a_limit_lifted_from_a_job_file_fills_every_slot(tmp_path: Path) -> None:
    jobs = job_files(tmp_path, j='command = ["true"]\nconcurrency = 1\n', x='command = ["true"]\n')
    with faked(tmp_path, jobs, capacity=3, jobs_refresh_s=REFRESH_S) as srv:
        x = srv.submit("x")["id"]
        for _ in range(4):
            srv.submit("j")
        wait_for(lambda: running(srv) == 2, what="x and one j running")
        (jobs / "j.toml").write_text('command = ["true"]\n')
        past_refresh()
        srv.finish(x)
        wait_for(lambda: running(srv) == 3, what="every slot taken by j")


def test_more_held_than_capacity_is_not_replaced_one_for_one(tmp_path: Path) -> None:
    """As after a restart with a lower capacity and more programs adopted than it allows."""
    with faked(tmp_path, plain_jobs(tmp_path), capacity=3) as srv:
        for _ in range(8):
            srv.submit("mark")
        wait_for(lambda: running(srv) == 3, what="three running")
        srv.runtime.slots.capacity = 1
        seen = []
        for _ in range(3):
            end_one(srv)
            seen.append(running(srv))
        assert seen == [2, 1, 1]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    at = conninfo_to_dict(POSTGRES)
    try:
        yield (
            f"postgresql://{at.get('user', 'postgres')}@{at.get('host', '127.0.0.1')}:"
            f"{at.get('port', 5432)}/{at.get('dbname', 'test')}?options=-csearch_path%3D{schema}"
        )
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_a_claim_that_skipped_rows_on_postgres_leaves_no_slot_idle(
    tmp_path: Path, postgres_url: str
) -> None:
    """PostgreSQL's claims skip rows another transaction holds: the slot an end could not fill
    is filled at the next end, as the dispatcher did before."""
    with faked(tmp_path, plain_jobs(tmp_path), capacity=2, database_url=postgres_url) as srv:
        for _ in range(8):
            srv.submit("mark")
        wait_for(lambda: running(srv) == 2, what="two running")
        with psycopg.connect(postgres_url) as holder:  # a peer's claim, say, under way
            holder.execute("SELECT id FROM runs WHERE state = 'queued' FOR UPDATE")
            end_one(srv)  # its claim skips every held row: nothing taken
            assert running(srv) == 1
        end_one(srv)
        wait_for(lambda: running(srv) == 2, what="both slots taken again")


def test_a_dispatcher_stopping_waits_for_an_end_claiming_under_way(tmp_path: Path) -> None:
    with faked(tmp_path, plain_jobs(tmp_path), capacity=1) as srv:
        ids = [srv.submit("mark")["id"] for _ in range(3)]
        wait_for(lambda: len(srv.launched()) == 1, what="one launch")
        runtime = srv.runtime
        writing = asyncio.Event()

        async def scenario() -> tuple[int, int]:
            store, original = runtime.store, runtime.store.end_and_claim

            async def held(*args: Any, **kwargs: Any) -> Any:
                writing.set()
                await asyncio.sleep(0.2)  # the end's transaction, slow
                return await original(*args, **kwargs)

            store.end_and_claim = held  # type: ignore[method-assign]
            await srv.executor.finish(ids[0], 1)
            await writing.wait()
            await runtime.dispatcher.stop()
            at_stop = len(srv.executor.launches)
            await asyncio.sleep(0.3)
            return at_stop, len(srv.executor.launches)

        at_stop, later = srv.call(scenario())
        assert (at_stop, later) == (2, 2)  # launched before stop returned, nothing after


def test_a_dispatcher_stopping_while_its_own_claim_commits_launches_what_it_took(
    tmp_path: Path,
) -> None:
    """Stopped after its claim committed and before it heard back: the run it took is
    launched before stop returns, as an end's claim is — not left claimed, its attempt
    `starting` with no program, for the next start's reconcile to find."""
    with faked(tmp_path, plain_jobs(tmp_path), capacity=1) as srv:
        runtime = srv.runtime

        async def scenario() -> str:
            store, original = runtime.store, runtime.store.claim
            committed, release = asyncio.Event(), asyncio.Event()

            async def held(*args: Any, **kwargs: Any) -> Any:
                claims = await original(*args, **kwargs)
                committed.set()
                await release.wait()  # its answer on its way back to the dispatcher
                return claims

            store.claim = held  # type: ignore[method-assign]
            run, _ = await runtime.runs.submit("mark", {})
            await committed.wait()
            stopping = asyncio.create_task(runtime.dispatcher.stop())
            await asyncio.sleep(0)
            release.set()
            await stopping
            return run.id

        run_id = srv.call(scenario())
        assert srv.launched() == [run_id]


async def draining(srv: FakedServer) -> asyncio.Task[None]:
    """A drain begun, once its first step has paused the dispatcher."""
    dispatcher, paused = srv.runtime.dispatcher, asyncio.Event()
    pause = dispatcher.pause

    async def pausing() -> None:
        paused.set()  # pause() sets `paused` before its first await, in this same step
        await pause()

    dispatcher.pause = pausing  # type: ignore[method-assign]
    drain = asyncio.create_task(srv.runtime.lifecycle.drain())
    await paused.wait()
    return drain


def test_a_drain_begun_while_an_end_claims_launches_nothing_and_cancels_nothing(
    tmp_path: Path,
) -> None:
    """The end's claim commits after the drain paused the dispatcher: the run it took goes
    back to the queue, never started, and the drain neither launches nor cancels it."""
    with faked(tmp_path, plain_jobs(tmp_path), capacity=1) as srv:
        ids = [srv.submit("mark")["id"] for _ in range(3)]
        wait_for(lambda: len(srv.launched()) == 1, what="one launch")
        runtime = srv.runtime

        async def scenario() -> None:
            store, original = runtime.store, runtime.store.end_and_claim
            writing, release = asyncio.Event(), asyncio.Event()

            async def held(*args: Any, **kwargs: Any) -> Any:
                writing.set()
                await release.wait()  # the end's transaction, still under way
                return await original(*args, **kwargs)

            store.end_and_claim = held  # type: ignore[method-assign]
            await srv.executor.finish(ids[0], 1)
            await writing.wait()
            drain = await draining(srv)
            release.set()
            await drain  # its timeout is 300 s: it ends only if nothing is left running

        srv.call(scenario())
        assert len(srv.launched()) == 1
        assert srv.executor.cancels == []
        assert [srv.run(i)["state"] for i in ids] == ["succeeded", "queued", "queued"]


def test_a_drain_begun_while_the_dispatcher_claims_launches_nothing(tmp_path: Path) -> None:
    """The same for the dispatcher's own claim, under way when the drain began."""
    with faked(tmp_path, plain_jobs(tmp_path), capacity=1) as srv:
        runtime = srv.runtime

        async def scenario() -> str:
            store, original = runtime.store, runtime.store.claim
            claiming, release = asyncio.Event(), asyncio.Event()

            async def held(*args: Any, **kwargs: Any) -> Any:
                claiming.set()
                await release.wait()
                return await original(*args, **kwargs)

            store.claim = held  # type: ignore[method-assign]
            run, _ = await runtime.runs.submit("mark", {})
            await claiming.wait()
            drain = await draining(srv)
            release.set()
            await drain
            return run.id

        run_id = srv.call(scenario())
        assert srv.launched() == []
        assert srv.run(run_id)["state"] == "queued"


@pytest.mark.parametrize("how", ["drain", "stop"])
def test_a_dispatcher_reading_the_job_files_when_a_drain_or_a_stop_begins_claims_nothing(
    tmp_path: Path, how: str
) -> None:
    """Paused (a drain) or told to stop while it awaited the job files (their rescan runs on
    a thread): it claims nothing after, so the drain finds no attempt of this server to wait
    for or cancel, and a stop leaves nothing claimed."""
    with faked(tmp_path, plain_jobs(tmp_path), capacity=1) as srv:
        runtime = srv.runtime
        claims = counting_claims(srv, "claim")

        async def scenario() -> str:
            registry, original = runtime.registry, runtime.registry.snapshot
            reading, release = asyncio.Event(), asyncio.Event()

            async def snapshot() -> Any:
                if asyncio.current_task() is runtime.dispatcher._task and not release.is_set():
                    reading.set()
                    await release.wait()
                return await original()

            registry.snapshot = snapshot  # type: ignore[method-assign]
            before = claims[0]
            run, _ = await runtime.runs.submit("mark", {})
            await reading.wait()
            if how == "drain":
                ending = await draining(srv)
            else:
                ending = asyncio.create_task(runtime.dispatcher.stop())
                await asyncio.sleep(0)
            release.set()
            await ending
            assert claims[0] == before
            return run.id

        run_id = srv.call(scenario())
        if how == "drain":
            srv.settle()
        assert srv.launched() == []
        assert srv.executor.cancels == []
        assert srv.run(run_id)["state"] == "queued"
