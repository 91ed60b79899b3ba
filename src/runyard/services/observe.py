"""Run metrics from state transitions (a transitions subscriber)."""

from __future__ import annotations

from collections.abc import Callable

from runyard.metrics import Metrics
from runyard.models import Run, RunState


def transition_recorder(metrics: Metrics) -> Callable[[Run, RunState], None]:
    def record(run: Run, previous: RunState) -> None:
        metrics.child(metrics.transitions, run.job, run.state.value).inc()
        if previous is RunState.RUNNING and run.state is RunState.QUEUED:
            metrics.child(metrics.retries, run.job).inc()
        elif run.state is RunState.RUNNING and run.attempt == 1 and run.started_at is not None:
            metrics.child(metrics.queue_wait, run.job).observe(
                max(0.0, run.started_at - run.created_at)
            )
        elif run.state.terminal and run.started_at is not None and run.finished_at is not None:
            metrics.child(metrics.run_duration, run.job, run.state.value).observe(
                max(0.0, run.finished_at - run.started_at)
            )

    return record
