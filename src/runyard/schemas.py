"""The HTTP API's wire format, shared by the server and the Python client."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from runyard.models import Attempt, Run, RunState

LabelKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
LabelValue = Annotated[str, StringConstraints(max_length=256)]
MAX_LABELS = 32


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    params: dict[str, Any] = Field(default_factory=dict)
    priority: int | None = Field(default=None, ge=-1000, le=1000)
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _few_labels(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels")
        return v


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    params: dict[str, Any] = Field(default_factory=dict, description="shared by every run")
    iterations: int | None = Field(default=None, ge=1, description="N copies of params")
    sweep: dict[str, Annotated[list[Any], Field(min_length=1)]] | None = Field(
        default=None, max_length=32, description="param -> values: one run per combination"
    )
    priority: int | None = Field(default=None, ge=-1000, le=1000)
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)


class BatchView(BaseModel):
    id: str
    job: str
    size: int
    created_at: datetime
    counts: dict[str, int] = Field(description="the batch's runs by state")
    done: bool = Field(description="every run has ended")


class BatchPage(BaseModel):
    batches: list[BatchView]
    next_cursor: str | None


class Principal(BaseModel):
    name: str | None = Field(description="the token's name; null when auth is off")
    role: str = Field(description="read, submit or admin")
    auth: bool = Field(description="whether this server asks for tokens at all")


class ScheduleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    params: dict[str, Any] = Field(default_factory=dict)
    cron: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        default=None, description="five-field cron expression, in UTC"
    )
    interval_s: float | None = Field(default=None, gt=0, le=366 * 86400)
    overlap: Literal["skip", "queue", "allow"] = Field(
        default="skip", description="when the previous run is still active"
    )
    catch_up: Literal["once", "none"] = Field(
        default="once", description="fires missed while the server was down"
    )
    paused: bool = False
    priority: int | None = Field(default=None, ge=-1000, le=1000)
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)


class SchedulePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] | None = None
    cron: Annotated[str, StringConstraints(max_length=200)] | None = None
    interval_s: float | None = Field(default=None, gt=0, le=366 * 86400)
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
    labels: dict[str, str]
    created_at: datetime
    last_fired_at: datetime | None
    next_fire_at: datetime | None
    fire_count: int
    skip_count: int
    last_run_id: str | None


class AttemptView(BaseModel):
    number: int
    state: str
    host: str
    pid: int | None
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    signal: int | None
    outcome: str | None
    peak_rss_kb: int | None

    @classmethod
    def of(cls, a: Attempt) -> AttemptView:
        return cls(
            number=a.number,
            state=a.state.value,
            host=a.host,
            pid=a.pid,
            started_at=_dt(a.started_at),
            ended_at=_dt(a.ended_at),
            exit_code=a.exit_code,
            signal=a.signal,
            outcome=a.outcome,
            peak_rss_kb=a.peak_rss_kb,
        )


class RunView(BaseModel):
    id: str
    job: str
    params: dict[str, Any]
    state: RunState
    priority: int
    labels: dict[str, str]
    batch_id: str | None
    schedule_id: str | None
    idempotency_key: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempt: int
    exit_code: int | None
    reason: str | None
    progress: dict[str, Any] | None
    progress_skipped: int = Field(default=0, description="malformed progress lines skipped")
    not_before: datetime | None
    cancel_requested: bool
    attempts: list[AttemptView] | None = None

    @classmethod
    def of(cls, r: Run, attempts: list[Attempt] | None = None) -> RunView:
        return cls(
            id=r.id,
            job=r.job,
            params=r.params,
            state=r.state,
            priority=r.priority,
            labels=r.labels,
            batch_id=r.batch_id,
            schedule_id=r.schedule_id,
            idempotency_key=r.idempotency_key,
            created_at=datetime.fromtimestamp(r.created_at, UTC),
            started_at=_dt(r.started_at),
            finished_at=_dt(r.finished_at),
            attempt=r.attempt,
            exit_code=r.exit_code,
            reason=r.reason,
            progress=r.progress,
            progress_skipped=r.progress_skipped,
            not_before=_dt(r.not_before),
            cancel_requested=r.cancel_requested,
            attempts=None if attempts is None else [AttemptView.of(a) for a in attempts],
        )


class RunPage(BaseModel):
    runs: list[RunView]
    next_cursor: str | None


class JobView(BaseModel):
    name: str
    description: str
    command: list[str]
    params_schema: dict[str, Any]
    timeout_s: float | None
    kill_grace_s: float
    max_attempts: int
    retry_on: list[int | str]
    concurrency: int | None
    priority: int
    max_queue: int | None
    workspace: str
    artifacts: list[str]


class JobList(BaseModel):
    jobs: list[JobView]
    errors: dict[str, str] = Field(description="job file name -> why it did not load")


class ArtifactView(BaseModel):
    path: str
    size: int
    modified_at: datetime


class ArtifactList(BaseModel):
    artifacts: list[ArtifactView]
    workspace_bytes: int = Field(
        default=0, description="disk the run's workspace takes (first page only; else 0)"
    )
    next_cursor: str | None = Field(
        default=None, description="pass as `cursor` for the next page; null on the last"
    )
    partial: bool = Field(
        default=False,
        description="the workspace was larger than one walk may read (artifact_walk_max): "
        "some entries are not listed, or workspace_bytes counts only part of it",
    )


class ProblemError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details; `detail` names the offending field or limit."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemError] | None = None


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for problem answers, so the published schema says what is sent."""
    return {
        code: {"model": Problem, "content": {"application/problem+json": {}},
               "description": "a problem (RFC 9457)"}
        for code in codes
    }  # fmt: skip
