"""Schedule routes: create, list, read, change (pause, resume, retime), delete."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from runyard.api.deps import SchedulerDep
from runyard.api.inputs import Cursor, ScheduleId, int_query
from runyard.api.json_body import JSONBodyRoute
from runyard.api.security import ADMIN, READ, SUBMIT
from runyard.bounds import unshowable
from runyard.models import Schedule
from runyard.schedule_schemas import SchedulePage, SchedulePatch, ScheduleRequest, ScheduleView
from runyard.schemas import problem_responses

router = APIRouter(
    prefix="/v1/schedules",
    tags=["schedules"],
    route_class=JSONBodyRoute,  # a body: application/json, UTF-8, no key twice
    responses=problem_responses(400, 401, 403, 404, 413, 422, 503, 507),
)


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def schedule_view(s: Schedule) -> ScheduleView:
    # a stored value that cannot be answered as JSON is shown empty, never a 500 for the list
    params = {} if unshowable(s.params) else s.params
    labels = {} if unshowable(s.labels) else s.labels
    return ScheduleView(
        id=s.id, job=s.job, params=params, cron=s.cron, interval_s=s.interval_s,
        overlap=s.overlap, catch_up=s.catch_up, paused=s.paused, priority=s.priority,
        labels=labels, created_at=datetime.fromtimestamp(s.created_at, UTC),
        # paused, it fires nothing: the time it would have (stale, soon past) is not shown
        last_fired_at=_dt(s.last_fired_at),
        next_fire_at=None if s.paused else _dt(s.next_fire_at),
        fire_count=s.fire_count, skip_count=s.skip_count, fail_count=s.fail_count,
        last_error=s.last_error, last_run_id=s.last_run_id,
    )  # fmt: skip


@router.post(
    "", status_code=201, response_model=ScheduleView, dependencies=[SUBMIT],
    responses=problem_responses(409),
)  # fmt: skip
async def create_schedule(body: ScheduleRequest, scheduler: SchedulerDep) -> JSONResponse:
    s = await scheduler.create(
        body.job, body.params, cron=body.cron, interval_s=body.interval_s,
        overlap=body.overlap, catch_up=body.catch_up, paused=body.paused,
        priority=body.priority, labels=body.labels,
    )  # fmt: skip
    return JSONResponse(
        schedule_view(s).model_dump(mode="json"), status_code=201,
        headers={"Location": f"/v1/schedules/{s.id}"},
    )  # fmt: skip


@router.get("", response_model=SchedulePage, dependencies=[READ])
async def list_schedules(
    scheduler: SchedulerDep,
    cursor: Cursor = None,
    limit: Annotated[int, int_query(ge=1, le=500)] = 50,
) -> SchedulePage:
    """Oldest first (ids grow with time), `limit` at a time: a page is bounded whatever the
    number of schedules (`max_schedules`)."""
    ids = sorted(i for i in scheduler.schedules if cursor is None or i > cursor)
    page = ids[: limit + 1]
    more = len(page) > limit
    shown = [schedule_view(scheduler.schedules[i]) for i in page[:limit]]
    return SchedulePage(schedules=shown, next_cursor=page[limit - 1] if more else None)


@router.get("/{schedule_id}", response_model=ScheduleView, dependencies=[READ])
async def get_schedule(schedule_id: ScheduleId, scheduler: SchedulerDep) -> ScheduleView:
    return schedule_view(scheduler.get(schedule_id))


@router.patch(
    "/{schedule_id}", response_model=ScheduleView, dependencies=[SUBMIT],
    responses=problem_responses(409),  # its job no longer declared: only a pause changes it
)  # fmt: skip
async def patch_schedule(
    schedule_id: ScheduleId, body: SchedulePatch, scheduler: SchedulerDep
) -> ScheduleView:
    # null leaves a field as it is, except for cron/interval_s: it clears that timing (the
    # schedule must still have exactly one)
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items()
               if v is not None or k in ("cron", "interval_s")}  # fmt: skip
    return schedule_view(await scheduler.update(schedule_id, changes))


@router.delete("/{schedule_id}", status_code=204, dependencies=[ADMIN])
async def delete_schedule(schedule_id: ScheduleId, scheduler: SchedulerDep) -> Response:
    await scheduler.delete(schedule_id)
    return Response(status_code=204)
