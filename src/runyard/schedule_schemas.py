"""The wire format of schedules (`/v1/schedules`), shared by the server and the Python client."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runyard.schema_types import Cron, Labels, StrMap
from runyard.schemas import JobName, Params, RequestBody


class ScheduleRequest(RequestBody):
    # exactly one of cron and interval_s (the server answers 422 otherwise)
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [
            {"required": ["cron"], "properties": {"cron": {"type": "string"}}},
            {"required": ["interval_s"], "properties": {"interval_s": {"type": "number"}}},
        ]},
    )  # fmt: skip

    job: JobName
    params: Params = Field(default_factory=dict)
    cron: Cron | None = Field(
        default=None, description="five-field cron expression, in UTC, that fires"
    )
    interval_s: float | None = Field(
        default=None,
        gt=0,
        le=366 * 86400,
        allow_inf_nan=False,
        description="at least schedule_min_interval_s",
    )
    overlap: Literal["skip", "queue", "allow"] = Field(
        default="skip", description="when the previous run is still active"
    )
    catch_up: Literal["once", "none"] = Field(
        default="once", description="fires missed while the server was down"
    )
    paused: bool = False
    priority: int | None = Field(default=None, ge=-1000, le=1000)
    labels: Labels = Field(default_factory=dict)


def _both(cron: str, interval: str) -> dict[str, Any]:
    both = {"cron": {"type": cron}, "interval_s": {"type": interval}}
    return {"properties": both, "required": ["cron", "interval_s"]}


def _null_alone(given: str, other: str) -> dict[str, Any]:
    return {"properties": {given: {"type": "null"}}, "required": [given],
            "not": {"required": [other]}}  # fmt: skip


class SchedulePatch(RequestBody):
    # a change of timing names one of them (the other given null, or left out): both given,
    # both null, or one null without the other, is refused (422), as the schema says
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"not": {"anyOf": [
            _both("string", "number"), _both("null", "null"),
            _null_alone("cron", "interval_s"), _null_alone("interval_s", "cron"),
        ]}},
    )  # fmt: skip

    params: Params | None = None
    cron: Cron | None = None
    interval_s: float | None = Field(
        default=None,
        gt=0,
        le=366 * 86400,
        allow_inf_nan=False,
        description="at least schedule_min_interval_s",
    )
    overlap: Literal["skip", "queue", "allow"] | None = None
    catch_up: Literal["once", "none"] | None = None
    paused: bool | None = None


class ScheduleView(BaseModel):
    id: str
    job: str
    params: dict[str, Any]
    cron: str | None
    interval_s: float | None
    overlap: str
    catch_up: str
    paused: bool
    priority: int | None
    labels: StrMap
    created_at: datetime
    last_fired_at: datetime | None
    next_fire_at: datetime | None
    fire_count: int
    skip_count: int = Field(description="fires skipped by its overlap policy")
    fail_count: int = Field(description="fires that made no run (`last_error` says why)")
    last_error: str | None = Field(description="why the last fire made no run; null once one does")
    last_run_id: str | None


class SchedulePage(BaseModel):
    schedules: list[ScheduleView] = Field(fail_fast=True)
    next_cursor: str | None
