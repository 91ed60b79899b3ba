"""The run routes: submit, list, read, cancel, delete, logs."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from starlette.datastructures import Headers
from starlette.types import Receive

from runyard.api.client_gone import client_gone
from runyard.api.deps import RunsDep, SettingsDep
from runyard.api.inputs import (
    MAX_FORM_PARTS,
    MAX_QUERY_INT,
    Cursor,
    IdempotencyKey,
    IdFilter,
    JobFilter,
    LabelFilter,
    RunId,
    int_query,
    one_idempotency_key,
)
from runyard.api.json_body import JSONBodyRoute
from runyard.api.log_response import LogRangeResponse
from runyard.api.proxy import ON_OWNER
from runyard.api.security import ADMIN, READ, SUBMIT
from runyard.bounds import PARAM_NAME_PATTERN
from runyard.config import Settings
from runyard.errors import InvalidInputError
from runyard.models import RunFilter, RunState
from runyard.schemas import RunPage, RunView, SubmitRequest, problem_responses
from runyard.services.runs import RunService

router = APIRouter(
    prefix="/v1/runs",
    tags=["runs"],
    route_class=JSONBodyRoute,  # a body: application/json, UTF-8, no key twice
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 503, 507),
)


# The same submit as multipart/form-data, with files (handled by api/multipart_submit.py)
MULTIPART = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "encoding": {"run": {"contentType": "application/json"}},
                "schema": {
                    "type": "object",
                    "required": ["run"],
                    "maxProperties": MAX_FORM_PARTS,
                    # "run", or the name of a file param (any other part is refused)
                    "propertyNames": {"pattern": PARAM_NAME_PATTERN},
                    "properties": {
                        "run": {"$ref": "#/components/schemas/SubmitRequest"},
                    },
                    "additionalProperties": {
                        "type": "string",
                        "format": "binary",
                        "description": "a file for the file param of the part's name",
                    },
                },
            }
        }
    }
}

# RFC 7240: preferences are comma-separated, a value a token or a quoted string (which may
# hold a comma); `wait` is delta-seconds, here with up to six decimals
_PREFERENCES = re.compile(r',(?=(?:[^"]*"[^"]*")*[^"]*$)')
_WAIT_SECONDS = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,6})?")


MAX_PREFER = 200  # characters of Prefer, its several headers taken together


def prefer_of(headers: Headers) -> str | None:
    """The request's preferences: several Prefer headers are one list (RFC 7240), as if
    joined with commas. Refused (422) past MAX_PREFER characters."""
    values = headers.getlist("prefer")
    if not values:
        return None
    prefer = values[0] if len(values) == 1 else ", ".join(values)
    if len(prefer) > MAX_PREFER:
        raise InvalidInputError(f"Prefer: over {MAX_PREFER} characters", field="header.prefer")
    return prefer


def prefer_wait(prefer: str | None, limit: float) -> float:
    """RFC 7240 `Prefer: wait=N` (the first, if several), bounded by the server's max_wait_s;
    a wait that is not a number of seconds is refused (422), not read as what it begins with."""
    if not prefer:  # nearly every submission: nothing to parse
        return 0.0
    for preference in _PREFERENCES.split(prefer):
        name, _, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if not _WAIT_SECONDS.fullmatch(value):
            raise InvalidInputError(
                # ascii: the header's bytes as they came (read as Latin-1, UTF-8 showed as
                # `Ù£`)
                f"Prefer: wait must be a number of seconds, such as wait=30; got {value[:40]!a}",
                field="header.prefer",
            )
        return min(float(value), limit)
    return 0.0


@router.post(
    "",
    dependencies=[SUBMIT],
    status_code=202,
    response_model=RunView,
    responses={200: {"model": RunView, "description": "ended within Prefer: wait=N"}},
    openapi_extra=MULTIPART,
)
async def submit_run(
    body: SubmitRequest,
    runs: RunsDep,
    settings: SettingsDep,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    prefer: Annotated[
        str | None,
        Header(
            max_length=MAX_PREFER,
            description="RFC 7240 preferences; `wait=N` holds the answer up to N seconds (digits, "
            "up to six decimals; at most max_wait_s), anything else there is a 422",
        ),
    ] = None,
) -> Response:
    one_idempotency_key(request.headers)
    # the param says it in the document; the value is every Prefer header's (prefer_of)
    joined = prefer_of(request.headers) if prefer is not None else None
    return await answer_submit(runs, settings, body, idempotency_key, joined, request.receive)


async def answer_submit(
    runs: RunService,
    settings: Settings,
    body: SubmitRequest,
    idempotency_key: str | None,
    prefer: str | None,
    receive: Receive,
) -> Response:
    """What a submission answers, by this route or by its fast paths (api/fast_submit.py,
    api/middleware/submit_lane.py); `receive` is the request's, its body read whole."""
    wait = prefer_wait(prefer, settings.max_wait_s)  # a malformed one refused before anything
    run, created = await runs.submit(
        body.job,
        body.params,
        priority=body.priority,
        labels=body.labels,
        idempotency_key=idempotency_key,
    )
    headers = {"Location": f"/v1/runs/{run.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    if wait > 0:
        # The run is stored and queued already: a client leaving now changes nothing but
        # the wait, which ends (what is answered then goes nowhere). No await since submit
        # returned: its end cannot come before the waiter is in place. A replay's run was
        # read, not written, by this request: it is read again once the waiter is.
        run = await runs.wait(run, wait, client_gone(receive), replayed=not created)
        headers["Preference-Applied"] = f"wait={wait:g}"
    elif runs.claiming():
        # A free slot may have taken this run in its insert's own transaction, the claim the
        # dispatcher, woken with this request, is resuming from: its step sends the spawn
        # request (dispatch.py, `_send_now`). It goes first; this answer is built and sent
        # after. No claim under way (every slot taken): no step to give way to.
        await asyncio.sleep(0)
    status = 200 if run.state.terminal and wait > 0 else 202
    # serialised by pydantic-core straight to bytes: one per submission, the hottest body
    return Response(
        RunView.of(run).model_dump_json(), status_code=status, headers=headers,
        media_type="application/json",
    )  # fmt: skip


def _labels(raw: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"label filter {item!r} is not KEY=VALUE", field="label")
        out.append((key, value))
    return tuple(out)


@router.get("", response_model=RunPage, dependencies=[READ])
async def list_runs(
    runs: RunsDep,
    job: JobFilter = None,
    state: RunState | None = None,
    label: LabelFilter = [],  # noqa: B006  FastAPI copies the default
    batch: IdFilter = None,
    cursor: Cursor = None,
    limit: Annotated[int, int_query(ge=1, le=500)] = 50,
) -> RunPage:
    page = await runs.list(
        RunFilter(
            job=job, state=state, labels=_labels(label), batch_id=batch, cursor=cursor, limit=limit
        )
    )
    return RunPage(runs=[RunView.of(r) for r in page.runs], next_cursor=page.next_cursor)


@router.get("/{run_id}", response_model=RunView, dependencies=[READ])
async def get_run(run_id: RunId, runs: RunsDep) -> RunView:
    run = await runs.get_current(run_id)
    return RunView.of(run, await runs.attempts(run_id))


@router.post("/{run_id}/cancel", status_code=202, response_model=RunView, dependencies=[SUBMIT])
async def cancel_run(run_id: RunId, runs: RunsDep) -> RunView:
    return RunView.of(await runs.cancel(run_id))


@router.delete("/{run_id}", status_code=204, dependencies=[ADMIN, ON_OWNER])
async def delete_run(run_id: RunId, runs: RunsDep) -> Response:
    await runs.delete(run_id)
    return Response(status_code=204)


LOG_TEXT, LOG_BYTES = "text/plain; charset=utf-8", "application/octet-stream"


LOG_ANSWERS: dict[int | str, dict[str, Any]] = {200: {
    "content": {LOG_TEXT: {}, LOG_BYTES: {}},
    "description": "a byte range of the log, exactly as written: UTF-8 text when the range is "
                   "(one that would end inside a character ends before it), else bytes",
}}  # fmt: skip


@router.head(
    "/{run_id}/logs", dependencies=[READ, ON_OWNER], operation_id="head_logs",
    response_class=Response, responses=LOG_ANSWERS,
)  # fmt: skip
@router.get(
    "/{run_id}/logs", dependencies=[READ, ON_OWNER], response_class=Response,
    responses=LOG_ANSWERS,
)  # fmt: skip
async def get_logs(
    run_id: RunId,
    runs: RunsDep,
    offset: Annotated[int, int_query(ge=0, le=MAX_QUERY_INT)] = 0,
    limit: Annotated[int, int_query(ge=1, le=4 * 1024 * 1024)] = 1024 * 1024,
    attempt: Annotated[int | None, int_query(ge=1, le=MAX_QUERY_INT)] = None,
) -> Response:
    # Labelled as the stream frames the same bytes (a `log` event for UTF-8 text, `log.b64`
    # otherwise): never altered, called UTF-8 only when they are. A range cut inside a
    # character stops before it (the next range begins with it), as the stream's chunks do.
    log = await runs.open_log(run_id, attempt, offset, limit)
    return LogRangeResponse(log, LOG_TEXT if log.text else LOG_BYTES)
