"""When a schedule fires next: cron expressions (UTC, croniter) or fixed intervals."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from croniter import croniter

from runyard.errors import InvalidInputError


def check_cron(expr: str) -> str:
    if not croniter.is_valid(expr):
        raise InvalidInputError(f"cron expression {expr!r} is not valid", field="cron")
    return expr


def next_after(cron: str | None, interval_s: float | None, anchor: float, after: float) -> float:
    """The first fire time strictly after `after`: for an interval, on the grid that starts
    at `anchor` (the schedule's creation), so fires never drift."""
    if cron is not None:
        start = datetime.fromtimestamp(after, UTC)
        return float(croniter(cron, start).get_next(float))
    if interval_s is None or interval_s <= 0:
        raise InvalidInputError("a schedule needs `cron` or a positive `interval_s`", field="cron")
    steps = math.floor((after - anchor) / interval_s) + 1
    return anchor + max(1, steps) * interval_s
