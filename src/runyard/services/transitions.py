"""Transitions: every change of a run's state, published once, in order, to the subscribers
given at construction (waiters, streams, metrics, the scheduler, reconcile, health)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog

from runyard.models import Run, RunState

log = structlog.get_logger(__name__)

Subscriber = Callable[[Run, RunState], None]
"""Told (synchronously, never awaited) that `run` is now in its state, coming from `previous`."""


class Transitions:
    def __init__(self, subscribers: Sequence[Subscriber]) -> None:
        self._subscribers = tuple(subscribers)

    def publish(self, run: Run, previous: RunState) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(run, previous)
            except Exception:
                # one subscriber's failure must not keep the others (or the writer) uninformed
                log.exception("transition_subscriber_failed", run_id=run.id)
        fields = {
            "run_id": run.id, "job": run.job, "attempt": run.attempt,
            "from": previous.value, "to": run.state.value, "reason": run.reason,
        }  # fmt: skip
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.info("run_transition", **fields)
            return
        # The line is written once what the subscribers woke has run (a waiting client's
        # answer, the next launch): it records the change, it is not on its way. Lines keep
        # their order (the loop runs callbacks first in, first out) and the context they were
        # published in (call_soon runs them in a copy of it).
        loop.call_soon(_log_transition, fields)


def _log_transition(fields: dict[str, object]) -> None:
    log.info("run_transition", **fields)
