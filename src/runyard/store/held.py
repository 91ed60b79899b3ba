"""The slots a server holds at start: each attempt it runs (starting or running) with its
run's job, in one read, so that the count per job and the set of attempts agree
(services/slots.py; two reads let an end recorded between them count a slot for ever)."""

from __future__ import annotations

from runyard.models import attempt_key
from runyard.store.units import Unit, rows


def held_attempts(host: str) -> Unit[list[tuple[str, str]]]:
    """(attempt key, job) of every attempt starting or running on `host`."""
    found = yield rows("HELD_ATTEMPTS", host)
    return [(attempt_key(str(run_id), int(number)), str(job)) for run_id, number, job in found]
