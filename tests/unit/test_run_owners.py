"""The small owners of a run's life: slots (capacity and per-job room), end waiters, the
finish rate behind Retry-After, and owned tasks whose failures are logged."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

import structlog

from runyard.background import TaskGroup
from runyard.models import Run, RunState
from runyard.services.slots import Slots
from runyard.services.waiters import EndWaiters, FinishRate


def a_run(run_id: str, state: RunState) -> Run:
    return Run(id=run_id, job="j", params={}, state=state, priority=0, created_at=0.0)


def test_slots_count_per_job_and_free_up_once() -> None:
    async def scenario() -> None:
        slots = Slots(capacity=3)
        slots.take("a", "r1:1")
        slots.take("a", "r2:1")
        slots.take("b", "r3:1")
        assert (slots.active, slots.free) == (3, 0)
        assert slots.job_room({"a": 2, "b": 5}) == {"a": 0, "b": 4}
        assert slots.give_back("r1:1")
        assert not slots.give_back("r1:1")  # its slot was given back already
        assert slots.running == {"a": 1, "b": 1}
        slots.give_back("r2:1")
        slots.give_back("r3:1")
        await asyncio.wait_for(slots.idle(), 1)

    asyncio.run(scenario())


class HeldStore:
    """A store's answer to what a restarting server holds, its end recorded while it is read."""

    def __init__(self, during: Callable[[], object]) -> None:
        self.during = during

    async def held_attempts(self, host: str) -> list[tuple[str, str]]:
        self.during()  # an adopted attempt's end, recorded by a reconcile meanwhile
        return [("r1.1", "a"), ("r2.1", "b")]


def test_an_end_recorded_while_the_slots_are_loaded_frees_its_slot() -> None:
    async def scenario() -> None:
        slots = Slots(capacity=4)
        await slots.load(HeldStore(lambda: slots.give_back("r1.1")), "h")  # type: ignore[arg-type]
        assert slots.running == {"b": 1} and not slots.holds("r1.1")
        slots.give_back("r2.1")
        await asyncio.wait_for(slots.idle(), 1)  # a drain waits for nothing that ended

    asyncio.run(scenario())


def test_a_waiter_wakes_when_its_run_ends_and_not_before() -> None:
    async def scenario() -> None:
        waiters = EndWaiters()
        waiting = asyncio.create_task(waiters.wait_for_end("r1", 5))
        await asyncio.sleep(0)
        waiters.on_transition(a_run("r1", RunState.RUNNING), RunState.QUEUED)
        await asyncio.sleep(0)
        assert not waiting.done()
        waiters.on_transition(a_run("r1", RunState.SUCCEEDED), RunState.RUNNING)
        await asyncio.wait_for(waiting, 1)

    asyncio.run(scenario())


def test_a_waiter_answers_in_the_step_its_run_ends_and_its_watch_ends_after() -> None:
    """The answer does not wait for a turn of the loop spent on cancelling the watch of the
    caller's connection; the watch still ends, one step later, and an error it ended with (a
    connection that broke) is never reported as unretrieved."""

    async def scenario() -> None:
        unretrieved: list[dict[str, object]] = []
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
        waiters = EndWaiters()
        never = asyncio.Event()

        async def connection_open() -> None:
            await never.wait()

        waiting = asyncio.create_task(waiters.wait_for_end("r1", 5, connection_open()))
        for _ in range(2):  # in place, it lets one turn go (a spawn request's), then watches
            await asyncio.sleep(0)
        watches = asyncio.all_tasks() - {asyncio.current_task(), waiting}
        assert len(watches) == 1
        waiters.on_transition(a_run("r1", RunState.SUCCEEDED), RunState.RUNNING)
        await asyncio.sleep(0)  # the one step in which the waiter resumes
        assert waiting.done()  # answered in that step
        ended = waiting.result()
        assert ended is not None and ended.state is RunState.SUCCEEDED
        await asyncio.sleep(0)
        assert all(t.cancelled() for t in watches)  # and its watch is over the step after

        async def broken() -> None:
            raise OSError("the connection broke")

        assert await asyncio.wait_for(waiters.wait_for_end("r2", 5, broken()), 1) is None
        await asyncio.sleep(0)
        gc.collect()
        assert unretrieved == []

    asyncio.run(scenario())


def test_a_waiter_gives_up_after_its_time() -> None:
    async def scenario() -> None:
        await asyncio.wait_for(EndWaiters().wait_for_end("r1", 0.01), 1)

    asyncio.run(scenario())


def test_an_end_between_a_replays_two_reads_is_seen() -> None:
    """An idempotent replay waits on a run it read before its waiter was in place: the run,
    read again once it is (`current`), may still show running while its end is published."""

    async def scenario() -> None:
        waiters = EndWaiters()
        ended = a_run("r1", RunState.SUCCEEDED)

        async def current() -> Run:
            waiters.ended("r1", ended)  # the end, published while the run is read again
            return a_run("r1", RunState.RUNNING)  # what that read saw

        got = await asyncio.wait_for(waiters.wait_for_end("r1", 30, None, current), 5)
        assert got is ended

        async def already() -> Run:
            return ended  # ended before the waiter was in place: nothing will be published

        got = await asyncio.wait_for(waiters.wait_for_end("r1", 30, None, already), 5)
        assert got is ended

    asyncio.run(scenario())


def test_the_finish_rate_counts_only_ends() -> None:
    rate = FinishRate()
    assert rate.per_second() == 0.0
    rate.on_transition(a_run("r1", RunState.RUNNING), RunState.QUEUED)
    rate.on_transition(a_run("r1", RunState.SUCCEEDED), RunState.RUNNING)
    assert rate.per_second() == 0.0  # one end says nothing of a rate
    rate.on_transition(a_run("r2", RunState.FAILED), RunState.RUNNING)
    assert rate.per_second() > 0


def test_a_failed_owned_task_is_logged_and_awaited() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    async def scenario() -> None:
        group = TaskGroup("test")
        group.start(fails())
        await group.wait()
        await asyncio.sleep(0)  # the done callback runs
        assert len(group) == 0

    with structlog.testing.capture_logs() as logs:
        asyncio.run(scenario())
    assert any(e["event"] == "task_failed" and e["group"] == "test" for e in logs)


def test_a_cancelled_wait_for_a_groups_tasks_is_the_callers_alone() -> None:
    """`ended`: its caller cancelled (a reconcile pass at shutdown) is cancelled, and the
    tasks it waited for (start records being written) go on to their end."""

    async def scenario() -> None:
        group = TaskGroup("test")
        release = asyncio.Event()
        written: list[str] = []

        async def write() -> None:
            await release.wait()
            written.append("start")

        group.start(write())
        waiter = asyncio.create_task(group.ended())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.sleep(0)
        assert waiter.cancelled()
        release.set()
        await asyncio.wait_for(group.ended(), 1)
        assert written == ["start"]

    asyncio.run(scenario())
