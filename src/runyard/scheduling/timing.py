"""When a schedule fires next: cron expressions (UTC, croniter) or fixed intervals."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import structlog
from croniter import CroniterError, croniter

from runyard.errors import InvalidInputError
from runyard.models import Schedule
from runyard.scheduling.cron import MAX_CRON_LENGTH, cron_problem, croniter_form

log = structlog.get_logger(__name__)


def check_cron(expr: str, now: float) -> str:
    """A standard five-field expression (or an @-macro) that fires at least once more."""
    _check_syntax(expr)
    try:
        _iter(expr, datetime.fromtimestamp(now, UTC)).get_next(float)
    except (CroniterError, ValueError, OverflowError):
        # croniter searches a bounded span of years: `0 0 30 2 *` (Feb 30th) never matches
        raise InvalidInputError(f"cron: {expr!r} never fires", field="cron") from None
    return expr


def _iter(expr: str, start: datetime) -> croniter:
    """croniter as cron reads the day fields: a day matches either field when both are
    restricted (`0 0 13 * 5`: every 13th and every Friday), and both when either starts with
    `*` (`0 0 */2 * 1`: the Mondays of odd dates; croniter alone read it as every odd date
    and every Monday)."""
    fields = expr.split()
    day_or = len(fields) != 5 or not (fields[2].startswith("*") or fields[4].startswith("*"))
    return croniter(croniter_form(expr), start, day_or=day_or)


def _check_syntax(expr: str) -> None:
    if problem := cron_problem(expr):
        shown = expr if len(expr) <= MAX_CRON_LENGTH else expr[:MAX_CRON_LENGTH] + "..."
        raise InvalidInputError(f"cron: {shown!r}: {problem}", field="cron")


def check_interval(interval_s: float, minimum: float) -> float:
    if not math.isfinite(interval_s) or interval_s < minimum:
        raise InvalidInputError(
            f"interval_s: {interval_s!r} is under the minimum interval ({minimum:g} s, "
            "setting schedule_min_interval_s)",
            field="interval_s",
        )
    return interval_s


def next_after(cron: str | None, interval_s: float | None, anchor: float, after: float) -> float:
    """The first fire time strictly after `after`: for an interval, on the grid that starts
    at `anchor` (the schedule's creation), so fires never drift. A stored cron this version
    refuses (an older one let croniter's extensions in) gives none: InvalidInputError."""
    if cron is not None:
        _check_syntax(cron)
        start = datetime.fromtimestamp(after, UTC)
        try:
            return float(_iter(cron, start).get_next(float))
        except (CroniterError, ValueError, OverflowError) as exc:  # stopped matching
            raise InvalidInputError(
                f"cron: {cron!r} gives no next fire ({exc})", field="cron"
            ) from None
    if interval_s is None or interval_s <= 0:
        raise InvalidInputError("a schedule needs `cron` or a positive `interval_s`", field="cron")
    steps = math.floor((after - anchor) / interval_s) + 1
    return anchor + max(1, steps) * interval_s


def next_fire(s: Schedule, min_interval_s: float, anchor: float, after: float) -> float | None:
    """The next fire, or None (the schedule never fires again) when its timing cannot
    give one: a cron that stopped matching, or a row written before the bounds existed."""
    interval = None if s.interval_s is None else max(s.interval_s, min_interval_s)
    try:
        return next_after(s.cron, interval, anchor, after)
    except InvalidInputError as exc:
        # a row this version refuses (stored by an older one), or a cron that stopped
        # matching: the schedule's state, not the server's fault, said in one line
        log.warning("schedule_timing_invalid", schedule_id=s.id, error=exc.detail[:300])
    except Exception:
        log.exception("schedule_timing_invalid", schedule_id=s.id, cron=(s.cron or "")[:300])
    return None
