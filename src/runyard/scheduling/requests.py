"""What a schedule's creation or change must satisfy before it is held: a declared job, one
timing that fires within bounds, params as the job declares them, and params small enough to
be held in memory for as long as the schedule exists."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from runyard.clock import new_id
from runyard.errors import ConflictError, InvalidInputError, NotFoundError
from runyard.fastjson import dumps
from runyard.jobs import JobRegistry
from runyard.jobs.params import ParamError
from runyard.models import Schedule
from runyard.scheduling.file_params import FileParams
from runyard.scheduling.timing import check_cron, check_interval, next_after
from runyard.services.uploads import UploadTooLargeError

# The scheduler holds every schedule in memory (it fires them without reading the store), up
# to `max_schedules` of them. A request body may be 1 MiB: a thousand such schedules held a
# gigabyte. Their params, as JSON, stay within this; a run's params, which live in the store,
# are bounded only by the job's declarations and the request's size.
MAX_SCHEDULE_PARAMS_BYTES = 64 * 1024


async def check_request(
    registry: JobRegistry,
    files: FileParams | None,
    min_interval_s: float,
    job: str,
    params: dict[str, Any],
    cron: str | None,
    interval_s: float | None,
    now: float,
) -> None:
    # the job first: a request about no declared job is a 404 whatever else it says
    declared = await registry.get(job)
    if declared is None:
        raise NotFoundError(registry.undeclared(job), field="job")
    if (cron is None) == (interval_s is None):
        raise InvalidInputError("give exactly one of `cron` and `interval_s`", field="cron")
    if cron is not None:
        check_cron(cron, now)
    if interval_s is not None:
        check_interval(interval_s, min_interval_s)
    size = len(dumps(params))
    if size > MAX_SCHEDULE_PARAMS_BYTES:
        raise InvalidInputError(
            f"a schedule's params are held in memory while it exists: at most "
            f"{MAX_SCHEDULE_PARAMS_BYTES // 1024} KiB as JSON, these take {size} bytes",
            field="params", limit=MAX_SCHEDULE_PARAMS_BYTES,
        )  # fmt: skip
    try:
        values = declared.validate_params(params)
    except ParamError as exc:
        raise InvalidInputError(str(exc), errors=exc.errors) from None
    if declared.spec.has_files:  # each names a stored upload within its limits
        if files is None:
            raise InvalidInputError("this server takes no uploads", field="params")
        await files.check_files(declared, values, {})


async def new_schedule(
    registry: JobRegistry, files: FileParams | None, min_interval_s: float, now: float,
    job: str, params: dict[str, Any], *, cron: str | None, interval_s: float | None,
    **options: Any,
) -> Schedule:  # fmt: skip
    """A new schedule of `job` (checked as a submit of it would be), its first fire due;
    `options`: the rest of Schedule's fields as the request gave them."""
    await check_request(registry, files, min_interval_s, job, params, cron, interval_s, now)
    return Schedule(
        id=new_id(), job=job, params=params, cron=cron, interval_s=interval_s, created_at=now,
        next_fire_at=next_after(cron, interval_s, now, now), **options,
    )  # fmt: skip


def _about_params(exc: InvalidInputError | UploadTooLargeError) -> bool:
    """Whether check_request refused the params: their size or a file (`field`), or their
    values (`errors`, named within the params: the job's validation is what lists them)."""
    return "errors" in exc.extra or str(exc.extra.get("field", "")).startswith("params")


async def _check_change(
    s: Schedule, changes: dict[str, Any], registry: JobRegistry, files: FileParams | None,
    min_interval_s: float, timing: tuple[str | None, float | None], now: float,
) -> None:  # fmt: skip
    if await registry.get(s.job) is None:
        # the schedule is there: not a 404, and the PATCH names no job to blame
        raise ConflictError(
            f"the schedule's job {s.job!r} is no longer declared: only paused, overlap "
            "and catch_up can be changed until it is again (or the schedule deleted)"
        )
    params = changes.get("params", s.params)
    try:
        await check_request(registry, files, min_interval_s, s.job, params, *timing, now)
    except NotFoundError:  # removed between the two looks: the same answer
        raise ConflictError(f"the schedule's job {s.job!r} is no longer declared") from None
    except (InvalidInputError, UploadTooLargeError) as exc:
        if "params" in changes or not _about_params(exc):
            raise
        # the stored params, which a changed job no longer takes: the schedule's, not this
        # request's (a probe: a retime was a 422 naming `body.params.a`, never sent)
        raise ConflictError(
            f"the schedule's params no longer fit its job {s.job!r} ({exc.detail}): send "
            "`params` with this change, or pause it"
        ) from None


async def changed(
    s: Schedule,
    changes: dict[str, Any],
    registry: JobRegistry,
    files: FileParams | None,
    min_interval_s: float,
    now: float,
) -> Schedule:
    """A copy of `s` with `changes` (a PATCH's) made, checked."""
    for given, other in (("cron", "interval_s"), ("interval_s", "cron")):
        if given in changes and changes[given] is None and other not in changes:
            # alone, a null took the timing away from a schedule of that kind (a 422) and
            # changed nothing on one of the other: the same request, two answers by state
            raise InvalidInputError(
                f"`{given}: null` is given only beside `{other}`, the timing that replaces "
                f"it (a schedule has exactly one of `cron` and `interval_s`)", field=given,
            )  # fmt: skip
    params = changes.get("params", s.params)
    timing = "cron" in changes or "interval_s" in changes
    # a new timing replaces the other kind; a null one replaces nothing
    cron = changes.get("cron", None if changes.get("interval_s") else s.cron)
    interval = changes.get("interval_s", None if changes.get("cron") else s.interval_s)
    if changes.keys() - {"paused", "overlap", "catch_up"}:
        # what it runs or when: checked as a new schedule (a pause alone is not, so a schedule
        # whose job was removed or changed can still be paused)
        await _check_change(s, changes, registry, files, min_interval_s, (cron, interval), now)
    resumed = s.paused and changes.get("paused") is False
    t = replace(s, params=params, cron=cron, interval_s=interval)
    for key in ("overlap", "catch_up", "paused"):
        if key in changes:
            setattr(t, key, changes[key])
    if t.paused or t.overlap != "queue":
        t.pending = False  # a fire waiting for the previous run's end: not any more
    if timing or resumed:
        # on the grid the fires follow (an interval counts from created_at), so the first fire
        # after a change is no nearer than the rest
        t.next_fire_at = next_after(t.cron, t.interval_s, t.created_at, now)
    return t
