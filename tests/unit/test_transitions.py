"""Transitions: published once, in order, to the subscribers given at construction; one
subscriber's failure neither stops the others nor reaches the writer."""

from __future__ import annotations

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
