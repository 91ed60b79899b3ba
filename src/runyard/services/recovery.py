"""Reconciling the store with reality after a start or a lost supervisor.

For every attempt the store thinks is starting or running: an exit file means it ended
(finalise it with its real exit status); a live entry in the supervisor means it still runs
(adopt it); anything else is lost, and what is left of its process group is killed (checked by
pid and start time) before any retry can start, so no run ever has two live attempts.
"""

from __future__ import annotations

import structlog

from runyard.models import AttemptState, parse_attempt_key
from runyard.services.dispatch import Dispatcher

log = structlog.get_logger(__name__)


async def reconcile(dispatcher: Dispatcher) -> dict[str, int]:
    store, executor = dispatcher.store, dispatcher.executor
    alive = await executor.running()
    counts = {"finalised": 0, "adopted": 0, "lost": 0, "requeued": 0, "fenced": 0}
    mine = await store.active_attempts(dispatcher.host)
    # Programs the supervisor still runs for attempts that are no longer this server's (its
    # lease lapsed and another server retried them): stopped, so no run has two live attempts.
    for key in set(alive) - {a.key for a in mine}:
        run_id, number = parse_attempt_key(key)
        await executor.cancel(run_id, number, reason="fenced")
        counts["fenced"] += 1
    for attempt in mine:
        record = await executor.read_exit(attempt.run_id, attempt.number)
        if record is not None:
            await dispatcher.attempt_exited(record)
            counts["finalised"] += 1
            continue
        if attempt.key in alive:
            await dispatcher.adopted(attempt.run_id, attempt.number)
            counts["adopted"] += 1
            continue
        run = await store.get_run(attempt.run_id)
        if run is None:
            continue
        # Nothing of it may run on when a retry starts: no run ever has two live attempts.
        await executor.kill_leftovers(
            attempt.run_id, attempt.number, attempt.pid, attempt.proc_start_time
        )
        if attempt.state is AttemptState.STARTING:
            why = "the server stopped before its program was spawned"
            await dispatcher.attempt_not_started(run, attempt.number, why)
            counts["requeued"] += 1
        else:
            why = "its program was no longer under a supervisor"
            await dispatcher.attempt_lost(run, attempt.number, why)
            counts["lost"] += 1
    if any(counts.values()):
        log.info("reconciled", **counts)
    return counts
