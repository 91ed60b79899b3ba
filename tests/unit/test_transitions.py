"""Transitions: published once, in order, to the subscribers given at construction; one
subscriber's failure neither stops the others nor reaches the writer."""

from __future__ import annotations

import asyncio

import structlog
import structlog.testing

from runyard.models import Run, RunState
from runyard.services.transitions import Transitions


def a_run(state: RunState) -> Run:
    return Run(id="r1", job="j", params={}, state=state, priority=0, created_at=0.0)


def test_every_subscriber_is_told_in_order() -> None:
    told: list[tuple[str, RunState, RunState]] = []
    transitions = Transitions(
        [
            lambda run, previous: told.append(("first", previous, run.state)),
            lambda run, previous: told.append(("second", previous, run.state)),
        ]
    )
    transitions.publish(a_run(RunState.RUNNING), RunState.QUEUED)
    assert told == [
        ("first", RunState.QUEUED, RunState.RUNNING),
        ("second", RunState.QUEUED, RunState.RUNNING),
    ]


def test_a_failing_subscriber_does_not_keep_the_others_uninformed() -> None:
    told: list[str] = []

    def broken(run: Run, previous: RunState) -> None:
        raise RuntimeError("boom")

    transitions = Transitions([broken, lambda run, previous: told.append(run.id)])
    transitions.publish(a_run(RunState.SUCCEEDED), RunState.RUNNING)
    assert told == ["r1"]


def test_the_log_line_comes_after_what_the_subscribers_woke() -> None:
    """On the loop, the change is told first and logged after: a waiter's answer does not
    wait for the line; the lines keep their order and their context."""

    async def scenario() -> tuple[list[int], list[dict[str, object]]]:
        seen: list[int] = []  # how many lines were written when the waiter ran
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs:

            async def waiter() -> None:
                await ended
                seen.append(len(logs))

            task = asyncio.create_task(waiter())
            await asyncio.sleep(0)  # the waiter waits
            told = Transitions([lambda run, previous: ended.done() or ended.set_result(None)])
            structlog.contextvars.bind_contextvars(request_id="abc")
            try:
                told.publish(a_run(RunState.RUNNING), RunState.QUEUED)
                told.publish(a_run(RunState.SUCCEEDED), RunState.RUNNING)
            finally:
                structlog.contextvars.unbind_contextvars("request_id")
            assert logs == []  # nothing yet: the publisher goes on at once
            await task
        return seen, logs

    seen, logs = asyncio.run(scenario())
    assert seen == [0]
    assert [(e["from"], e["to"], e["request_id"]) for e in logs] == [
        ("queued", "running", "abc"),
        ("running", "succeeded", "abc"),
    ]


def test_without_a_loop_the_line_is_written_at_once() -> None:
    with structlog.testing.capture_logs() as logs:
        Transitions([]).publish(a_run(RunState.RUNNING), RunState.QUEUED)
    assert [(e["event"], e["to"]) for e in logs] == [("run_transition", "running")]
