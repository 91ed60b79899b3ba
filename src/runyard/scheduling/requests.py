"""What a schedule's creation or change must satisfy before it is held: a declared job, one
timing that fires within bounds, params as the job declares them, and params small enough to
be held in memory for as long as the schedule exists."""

from __future__ import annotations

from typing import Any

from runyard.errors import InvalidInputError, NotFoundError
from runyard.fastjson import dumps
from runyard.jobs import JobRegistry
from runyard.jobs.params import ParamError
from runyard.scheduling.file_params import FileParams
from runyard.scheduling.timing import check_cron, check_interval

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
        raise NotFoundError(f"job {job!r} is not declared", field="job")
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
