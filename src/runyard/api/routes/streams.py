"""Live routes: the log as SSE, events as SSE and over a WebSocket; all resumable."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, WebSocket, WebSocketDisconnect
from pydantic import StringConstraints
from sse_starlette import EventSourceResponse, ServerSentEvent

from runyard.api.deps import (
    EventFollowerDep,
    HubDep,
    LogFollowerDep,
    RunsDep,
    SettingsDep,
)
from runyard.api.inputs import NullUnpublished, int_query
from runyard.api.problems import problem_of, refuse_websocket
from runyard.api.proxy import ON_OWNER, ON_OWNER_IF_ALIVE
from runyard.api.security import READ
from runyard.api.sse import FramedEvent, sse_response
from runyard.errors import InvalidInputError, NotFoundError, RunyardError
from runyard.models import RunEvent
from runyard.schemas import problem_responses
from runyard.services.log_ranges import log_replaced
from runyard.streams.follow import EventItem, attempt_may_come
from runyard.streams.hub import StreamHub
from runyard.streams.subscriber import Chunk, Closed, End, Following, Lagged

router = APIRouter(
    prefix="/v1/runs/{run_id}",
    tags=["streams"],
    responses=problem_responses(401, 403, 404, 422),
)

# Resume points (a byte offset, an event's seq) are bounded: what is accepted is what a stream
# can answer, and the declared schema says exactly that (absent, or 1-18 digits; never null).
MAX_RESUME_ID = 10**18 - 1
LastEventId = Annotated[
    # whitespace around a field's value is no part of it (RFC 9110 5.5): `5 ` is 5
    Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9]{1,18}$")] | None,
    NullUnpublished(),
    Header(
        alias="Last-Event-ID",
        description="resume point: the id of the last event received (wins over the query)",
    ),
]
# A log event's id is its offset in attempt 1's log, or ATTEMPT:OFFSET in a later attempt's: a
# client that reconnects by itself (an EventSource) sends it back, and must resume in the
# attempt it was reading, not at that offset of whichever attempt is the latest now.
LogEventId = Annotated[
    Annotated[
        str,
        StringConstraints(strip_whitespace=True, pattern=r"^([1-9][0-9]{0,17}:)?[0-9]{1,18}$"),
    ]
    | None,
    NullUnpublished(),
    Header(
        alias="Last-Event-ID",
        description="resume point: the id of the last event received, OFFSET (attempt 1) or "
        "ATTEMPT:OFFSET (wins over the query; the attempt query wins over its attempt)",
    ),
]
# None is only Python's "absent", and is left out of the published schema (NullUnpublished);
# the bounds are the integer's, where the schema shows them.
ResumeQuery = Annotated[int | None, NullUnpublished(), int_query(ge=0, le=MAX_RESUME_ID)]
AttemptQuery = Annotated[
    int | None,
    NullUnpublished(),
    int_query(ge=1, le=MAX_RESUME_ID, description="the attempt to follow (default: the latest)"),
]


def _resume_point(last_event_id: str | None, query: int | None) -> int:
    """Last-Event-ID (sent by reconnecting clients) wins over the query parameter."""
    if last_event_id is not None:
        if not (last_event_id.isascii() and last_event_id.isdigit()):
            raise InvalidInputError(
                "Last-Event-ID must be a non-negative integer", field="header.Last-Event-ID"
            )
        return int(last_event_id)
    return query or 0


def _control(item: End | Lagged | Closed) -> tuple[str, dict[str, Any]]:
    if isinstance(item, End):
        return "end", {"state": item.state, "attempt": item.attempt, "exit_code": item.exit_code,
                       "reason": item.reason}  # fmt: skip
    if isinstance(item, Lagged):
        return "lagged", {"last_id": item.last_id, "detail": "this watcher fell behind; resume"}
    return "shutdown", {"detail": "the server is shutting down; reconnect to resume"}


def _log_resume_point(last_event_id: str | None, query: int | None) -> tuple[int | None, int]:
    """The attempt (None: the latest) and the offset a log stream resumes from."""
    if last_event_id is None:
        return None, query or 0
    attempt, _, offset = last_event_id.rpartition(":")
    if attempt:
        return int(attempt), int(offset)
    # a bare id is attempt 1's (0: from the start, of the latest attempt, as a new stream)
    return (1 if int(offset) else None), int(offset)


def _lagged_from(start: int) -> Callable[[str | None], ServerSentEvent]:
    """The `lagged` event of a watcher dropped for not taking a send in time: resume after the
    last event its connection was handed, or where it began when it was handed none."""

    def farewell(last_id: str | None) -> ServerSentEvent:
        offset = start if last_id is None else int(last_id.rpartition(":")[2])
        name, body = _control(Lagged(offset))
        return ServerSentEvent(data=json.dumps(body), event=name)

    return farewell


def log_event(chunk: Chunk, attempt: int = 1) -> ServerSentEvent:
    # SSE frames text by lines (\r, \n, \r\n all end a line), so a chunk goes as text only when
    # that framing gives back exactly its bytes; otherwise as base64.
    try:
        chunk.data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if b"\r" not in chunk.data:
            return FramedEvent(chunk.data, event="log", id=_log_id(chunk, attempt))
    data = base64.b64encode(chunk.data)
    return FramedEvent(data, event="log.b64", id=_log_id(chunk, attempt))


def _log_id(chunk: Chunk, attempt: int) -> str:
    return str(chunk.end) if attempt == 1 else f"{attempt}:{chunk.end}"


def event_payload(event: RunEvent) -> dict[str, Any]:
    return {"seq": event.seq, "at": event.at, "kind": event.kind, "data": event.data}


@router.get(
    "/logs/stream", response_class=EventSourceResponse, dependencies=[READ, ON_OWNER],
    responses=problem_responses(409),  # the log is no plain file (services/log_ranges.py)
)  # fmt: skip
async def stream_log(
    run_id: str,
    runs: RunsDep,
    follow_log: LogFollowerDep,
    settings: SettingsDep,
    hub: HubDep,
    last_event_id: LogEventId = None,
    offset: ResumeQuery = None,
    attempt: AttemptQuery = None,
) -> EventSourceResponse:
    resumed, start = _log_resume_point(last_event_id, offset)
    run = await runs.get(run_id)  # 404 before the stream starts
    asked = attempt or resumed
    if asked is not None and not attempt_may_come(run, asked):
        # as a log page answers it; followed, the stream waited, then ended a phantom
        raise NotFoundError(
            f"run {run_id} has no attempt {asked}",
            field="attempt" if attempt else "header.Last-Event-ID",
        )
    if (number := asked or run.attempt) >= 1:  # a 409 before the stream, as a log page's
        replaced = await asyncio.to_thread(log_replaced, hub.paths(run_id).log(number))
        if replaced is not None:
            raise replaced

    async def events() -> AsyncIterator[ServerSentEvent]:
        following = 1
        async for item in follow_log(run_id, attempt or resumed, start):
            if isinstance(item, Chunk):
                yield log_event(item, following)
            elif isinstance(item, Following):
                following = item.attempt
                yield ServerSentEvent(data=json.dumps({"attempt": item.attempt}), event="attempt")
            else:
                name, body = _control(item)
                # `lagged` carries its resume point as its id: where a client resumes from by
                # itself. A rewritten log's is 0 (resume from the start), which a client
                # resuming from the last id it had read lost, the log past its end (a probe)
                resume = None
                if isinstance(item, Lagged):
                    resume = _log_id(Chunk(item.last_id, b""), following)
                yield ServerSentEvent(data=json.dumps(body), event=name, id=resume)

    return sse_response(settings, hub, events(), _lagged_from(start))


@router.get("/events", response_class=EventSourceResponse, dependencies=[READ, ON_OWNER_IF_ALIVE])
async def stream_events(
    run_id: str,
    runs: RunsDep,
    follow_events: EventFollowerDep,
    settings: SettingsDep,
    hub: HubDep,
    last_event_id: LastEventId = None,
    after: ResumeQuery = None,
) -> EventSourceResponse:
    start = _resume_point(last_event_id, after)
    await runs.get(run_id)

    async def events() -> AsyncIterator[ServerSentEvent]:
        async for item in follow_events(run_id, start):
            if isinstance(item, RunEvent):  # JSON holds no line break: one `data:` line
                payload = json.dumps(event_payload(item)).encode()
                yield FramedEvent(payload, event=item.kind, id=str(item.seq))
            else:
                name, body = _control(item)
                yield ServerSentEvent(data=json.dumps(body), event=name)

    return sse_response(settings, hub, events(), _lagged_from(start))


@router.websocket("/ws")
async def events_socket(
    websocket: WebSocket,
    run_id: str,
    runs: RunsDep,
    follow_events: EventFollowerDep,
    hub: HubDep,
    after: Annotated[int, int_query(ge=0, le=MAX_RESUME_ID)] = 0,
) -> None:
    # its token was checked first of all (api/security.py's websocket_token)
    try:
        await runs.get(run_id)
    except RunyardError as exc:  # 404: answered as over HTTP, not a bare 403
        await refuse_websocket(websocket, problem_of(exc), 4000 + exc.status)
        return
    await websocket.accept()
    with hub.stream():
        # The client's messages are read all along: a client that goes away while the run is
        # quiet is noticed at once, not at the next event (which may never come).
        events = follow_events(run_id, after)
        sending = asyncio.create_task(_send_events(websocket, hub, events))
        listening = asyncio.create_task(_until_disconnect(websocket))
        try:
            await asyncio.wait({sending, listening}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sending, listening):
                task.cancel()
            await asyncio.gather(sending, listening, return_exceptions=True)


async def _send_events(
    websocket: WebSocket, hub: StreamHub, events: AsyncIterator[EventItem]
) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        async for item in events:
            if isinstance(item, RunEvent):
                await websocket.send_json({"type": item.kind, **event_payload(item)})
            else:
                name, body = _control(item)
                await websocket.send_json({"type": name, **body})
        await websocket.close(1001 if hub.closed else 1000)  # going away / done


async def _until_disconnect(websocket: WebSocket) -> None:
    """Return when the client closes or goes away; what it sends is not used."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass
