"""The HTTP API's wire format, shared by the server and the Python client."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from runyard.bounds import (
    JOB_NAME_PATTERN,
    PARAM_NAME_PATTERN,
    unshowable,
)
from runyard.models import Attempt, Run, RunState
from runyard.schema_types import IntMap, Labels, StrMap

JobName = Annotated[str, StringConstraints(pattern=JOB_NAME_PATTERN)]
ParamName = Annotated[str, StringConstraints(pattern=PARAM_NAME_PATTERN)]
# Each value is checked against the job's own params schema (GET /v1/jobs/{name}).
Params = Annotated[
    dict[ParamName, Any],
    WithJsonSchema({
        "type": "object", "propertyNames": {"pattern": PARAM_NAME_PATTERN},
        "additionalProperties": True,
        "description": "param -> value, as the job's params_schema says (GET /v1/jobs/NAME)",
    }),
]  # fmt: skip
MAX_SWEEP = 32
Sweep = Annotated[
    dict[ParamName, Annotated[list[Any], Field(min_length=1)]],
    Field(min_length=1, max_length=MAX_SWEEP),  # `{}` sweeps nothing: a mistake, not one run
    WithJsonSchema({
        "type": "object", "minProperties": 1, "maxProperties": MAX_SWEEP,
        "propertyNames": {"pattern": PARAM_NAME_PATTERN},
        "additionalProperties": {"type": "array", "minItems": 1},
        "description": "param -> values: one run per combination",
    }),
]  # fmt: skip


def _dt(ts: float | None) -> datetime | None:
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, ValueError, OSError, TypeError):
        return None  # a damaged timestamp reads as unknown rather than failing the answer


def _shown(run: Run) -> tuple[dict[str, Any], list[str]]:
    """The run's stored free-form values that can be answered as JSON, and the names of
    those that cannot (each replaced by its empty value). One dumps in the common case."""
    values: dict[str, Any] = {
        "params": run.params, "labels": run.labels, "progress": run.progress,
        "reason": run.reason, "idempotency_key": run.idempotency_key,
    }  # fmt: skip
    if unshowable(values) is None:
        return values, []
    empty: dict[str, Any] = {"params": {}, "labels": {}}
    withheld = [name for name, value in values.items() if unshowable(value) is not None]
    for name in withheld:
        values[name] = empty.get(name)
    return values, withheld


class RequestBody(BaseModel):
    """A request body takes JSON's own types, as the OpenAPI document says: pydantic's lax
    mode would also turn "5" or true into a number, "yes" or 1 into a boolean."""

    @field_validator("priority", "iterations", "interval_s", mode="before", check_fields=False)
    @classmethod
    def _a_json_number(cls, value: object) -> object:
        if isinstance(value, str | bool):
            # a ValueError, which pydantic answers as invalid input (a TypeError would be a 500)
            raise ValueError("must be a JSON number, not a string or a boolean")  # noqa: TRY004
        return value

    @field_validator("paused", "stream", "include_usage", mode="before", check_fields=False)
    @classmethod
    def _a_json_boolean(cls, value: object) -> object:
        if value is not None and not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value


class SubmitRequest(RequestBody):
    model_config = ConfigDict(extra="forbid")

    job: JobName
    params: Params = Field(default_factory=dict)
    priority: int | None = Field(default=None, ge=-1000, le=1000)
    labels: Labels = Field(default_factory=dict)


class BatchRequest(RequestBody):
    # exactly one of iterations and sweep, as the server checks it (422 otherwise)
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"properties": {"iterations": {"type": "integer"}}, "required": ["iterations"]},
                {"properties": {"sweep": {"type": "object"}}, "required": ["sweep"]},
            ]
        },
    )

    job: JobName
    params: Params = Field(default_factory=dict, description="shared by every run")
    iterations: int | None = Field(default=None, ge=1, description="N copies of params")
    sweep: Sweep | None = None
    priority: int | None = Field(default=None, ge=-1000, le=1000)
    labels: Labels = Field(default_factory=dict)


class BatchView(BaseModel):
    id: str
    job: str
    size: int
    created_at: datetime
    counts: IntMap = Field(
        description="the batch's runs by state; `size` less their sum were deleted since"
    )
    done: bool = Field(description="every run has ended (none is queued or running)")
    idempotency_key: str | None = Field(description="the `Idempotency-Key` it was made with")


class UploadView(BaseModel):
    id: str = Field(description="the sha256 of the bytes (hex); a param takes `upload:ID`")
    ref: str = Field(
        description="what a file param takes for these bytes under this name: `upload:ID/NAME` "
        "(the name this request gave them, made safe; the same bytes sent before under another "
        "name keep that one as `name`)"
    )
    size: int = Field(description="bytes")
    name: str = Field(description="the file name they were first stored under, made safe")
    original_name: str = Field(description="as sent (metadata only)")
    created_at: datetime


class BatchPage(BaseModel):
    batches: list[BatchView] = Field(fail_fast=True)
    next_cursor: str | None


class Principal(BaseModel):
    name: str | None = Field(description="the token's name; null when auth is off")
    role: str = Field(description="read, submit or admin")
    auth: bool = Field(description="whether this server asks for tokens at all")


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
    labels: StrMap
    batch_id: str | None
    schedule_id: str | None
    idempotency_key: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempt: int
    exit_code: int | None = Field(
        description="the last attempt's, once it ended; none while an attempt runs (a retry's)"
    )
    reason: str | None = Field(description="why it is in its state; none while it runs")
    progress: dict[str, Any] | None
    progress_skipped: int = Field(default=0, description="malformed progress lines skipped")
    not_before: datetime | None
    cancel_requested: bool
    attempts: list[AttemptView] | None = Field(
        default=None, fail_fast=True,
        description="its attempts, in order, where the answer reads them (`GET "
        "/v1/runs/{id}`); null where it does not (a page of runs, a submit's or a cancel's "
        "answer): not that it has none",
    )  # fmt: skip
    withheld: list[str] = Field(
        default_factory=list,
        fail_fast=True,
        description="fields whose stored value cannot be shown as JSON (answered empty)",
    )

    @classmethod
    def of(cls, r: Run, attempts: list[Attempt] | None = None) -> RunView:
        shown, withheld = _shown(r)
        return cls(
            id=r.id,
            job=r.job,
            params=shown["params"],
            state=r.state,
            priority=r.priority,
            labels=shown["labels"],
            batch_id=r.batch_id,
            schedule_id=r.schedule_id,
            idempotency_key=shown["idempotency_key"],
            created_at=_dt(r.created_at) or datetime.fromtimestamp(0, UTC),
            started_at=_dt(r.started_at),
            finished_at=_dt(r.finished_at),
            attempt=r.attempt,
            exit_code=r.exit_code,
            reason=shown["reason"],
            progress=shown["progress"],
            progress_skipped=r.progress_skipped,
            not_before=_dt(r.not_before),
            cancel_requested=r.cancel_requested,
            attempts=None if attempts is None else [AttemptView.of(a) for a in attempts],
            withheld=withheld,
        )


class RunPage(BaseModel):
    runs: list[RunView] = Field(fail_fast=True)
    next_cursor: str | None


class JobView(BaseModel):
    name: str
    description: str
    command: list[str] = Field(fail_fast=True)
    params_schema: dict[str, Any]
    timeout_s: float | None
    kill_grace_s: float
    max_attempts: int
    retry_on: list[int | str] = Field(fail_fast=True)
    concurrency: int | None
    priority: int
    max_queue: int | None
    workspace: str
    artifacts: list[str] = Field(fail_fast=True)
    sandbox: dict[str, Any] | None = Field(
        default=None, description="the sandbox its runs get (network, binds), or null: none"
    )


class JobList(BaseModel):
    jobs: list[JobView] = Field(fail_fast=True)
    errors: StrMap = Field(description="job file name -> why it did not load")


class ArtifactView(BaseModel):
    path: str
    size: int
    modified_at: datetime


class SkippedArtifact(BaseModel):
    path: str = Field(description="to be shown, not asked for: bytes not UTF-8 as \\xNN")
    reason: str = Field(description="why it cannot be served")


class ArtifactList(BaseModel):
    artifacts: list[ArtifactView] = Field(fail_fast=True)
    workspace_bytes: int = Field(
        default=0, description="disk the run's workspace takes (first page only; else 0)"
    )
    next_cursor: str | None = Field(
        default=None, description="pass as `cursor` for the next page; null on the last"
    )
    partial: bool = Field(
        default=False,
        description="not every declared file is listed (`skipped` says which and why: "
        "an entry that cannot be served, or a directory read in part, past "
        "RUNYARD_ARTIFACT_WALK_MAX entries), or workspace_bytes counts only part of it",
    )
    skipped: list[SkippedArtifact] = Field(
        default_factory=list,
        fail_fast=True,
        description="entries the globs declare that cannot be served (a name that is not "
        "UTF-8 or holds a control character, a link, not a regular file, a mount point) and "
        "directories read in part, 100 a page at most",
    )
    skipped_omitted: int = Field(default=0, description="skipped past the 100 named")


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
    errors: list[ProblemError] | None = Field(default=None, max_length=50)
    errors_omitted: int | None = Field(default=None, description="errors found past the 50 listed")


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for problem answers, so the published schema says what is sent."""
    return {
        code: {"model": Problem, "content": {"application/problem+json": {}},
               "description": "a problem (RFC 9457)"}
        for code in codes
    }  # fmt: skip
