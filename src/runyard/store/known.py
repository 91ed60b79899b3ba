"""Which of some runs the store knows, with the last attempt number it gave each: what the
start-up audit of the run directories (services/file_audit.py) compares the files with."""

from __future__ import annotations

from runyard.store.rows import dumps
from runyard.store.units import Unit, rows


def last_attempts(run_ids: list[str]) -> Unit[dict[str, int | None]]:
    """{run id: its last attempt's number (0: none yet; None: finished, so none will come)}
    for those of `run_ids` it knows."""
    found = yield rows("LAST_ATTEMPTS", dumps(run_ids))
    return {str(run_id): None if number is None else int(number) for run_id, number in found}
