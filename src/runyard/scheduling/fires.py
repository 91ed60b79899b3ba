"""What one fire of a schedule makes: its run, or why it makes none.

Why is kept on the schedule (`last_error`, `fail_count`), apart from the skips of its overlap
policy, and said in the log when it changes — not at each fire: a schedule of a removed job,
fired every second, wrote a warning every second and showed nothing wrong on the schedule."""

from __future__ import annotations

import structlog

from runyard.clock import Clock
from runyard.errors import QueueFullError, RunyardError, StorageFullError
from runyard.jobs import JobRegistry
from runyard.jobs.params import ParamError
from runyard.jobs.spec import Job
from runyard.models import Run, Schedule
from runyard.scheduling.file_params import FileParams
from runyard.services.admission_holds import Hold
from runyard.services.runs import new_run

log = structlog.get_logger(__name__)
MAX_ERROR = 300  # characters of a fire's refusal kept on its schedule


async def new_run_of(
    s: Schedule, registry: JobRegistry, files: FileParams | None, clock: Clock
) -> tuple[Job, Run, Hold | None] | str:
    """The run a fire of `s` makes, or why it makes none; with its admission's hold, which
    the caller releases once the run is stored (or not)."""
    snapshot = await registry.snapshot()
    job = snapshot.jobs.get(s.job)
    if job is None:
        # a file that fails to load is no missing job: its owner is told what to fix
        if (error := snapshot.errors.get(f"{s.job}.toml")) is not None:
            return _refused(
                s, "schedule_job_unloadable", f"job {s.job!r} cannot be loaded: {error}"
            )
        return _refused(s, "schedule_job_missing", f"job {s.job!r} does not exist")
    try:
        values = job.validate_params(s.params)
    except ParamError as exc:
        return _refused(s, "schedule_params_invalid", f"params no longer valid: {exc}")
    hold = None
    if files is not None:
        try:  # its uploads still there: one gone failed each fire with a traceback, uncounted
            if job.spec.has_files:
                await files.check_files(job, values, {})
        except RunyardError as exc:
            return _refused(s, "schedule_fire_refused", f"refused: {exc}")
        try:  # admitted as a submission is: not past a max_queue nor the disk's reserve
            hold = await files.admit(s.job, job.spec.max_queue)
        except (QueueFullError, StorageFullError) as exc:
            return _refused(s, "schedule_fire_refused", f"refused: {exc}")
    run = new_run(job, values, clock, priority=s.priority, labels=s.labels, schedule_id=s.id)
    return job, run, hold


def _refused(s: Schedule, event: str, why: str) -> str:
    """`why`, cut to MAX_ERROR; logged if its kind (what comes before a colon) is new."""
    why = why if len(why) <= MAX_ERROR else why[: MAX_ERROR - 3] + "..."
    if s.last_error is None or s.last_error.split(":")[0] != why.split(":")[0]:
        level = log.info if event == "schedule_fire_refused" else log.warning
        level(event, schedule_id=s.id, job=s.job, error=why)
    return why
