"""OpenAI-compatible routes in front of jobs that declare `[openai]` (docs/openai.md):
`GET /v1/models`, `GET /v1/models/{model}` and `POST /v1/chat/completions`, which starts a
run (or attaches to the one this same request started) and answers once it has ended."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection
from starlette.types import Receive

from runyard.api import openai_errors
from runyard.api.chat_stream import StreamPlan, completion_events, fell_behind
from runyard.api.client_gone import client_gone
from runyard.api.deps import (
    HubDep,
    LogFollowerDep,
    RunsDep,
    SettingsDep,
    WorkspaceDep,
    runtime_of,
)
from runyard.api.inputs import IdempotencyKey
from runyard.api.openai_body import StrictJSONRoute
from runyard.api.openai_schemas import (
    AnswerMessage,
    ChatCompletion,
    ChatRequest,
    Choice,
    ModelId,
    ModelList,
    ModelView,
    usage,
)
from runyard.api.security import READ, SUBMIT
from runyard.api.sse import sse_response
from runyard.errors import UnavailableError
from runyard.jobs.spec import Job
from runyard.models import Run
from runyard.services.chat import ChatService, render_text
from runyard.streams.hub import StreamHub

_ERROR = {"model": openai_errors.ErrorBody, "description": "an error, in OpenAI's shape"}
router = APIRouter(
    prefix="/v1",
    tags=["openai"],
    route_class=StrictJSONRoute,  # the chat body: application/json, and strict JSON throughout
    responses=dict.fromkeys((400, 401, 403, 404, 409, 413, 422, 429, 500, 503), _ERROR),
)


async def _chat(conn: HTTPConnection, runs: RunsDep, workspace_of: WorkspaceDep) -> ChatService:
    rt = runtime_of(conn)
    state = conn.app.state  # one of each for the server: see AskedBack, Callers
    return ChatService(
        runs, rt.registry, workspace_of, rt.clock.now, state.chat_asked_back, state.chat_callers
    )


ChatDep = Annotated[ChatService, Depends(_chat)]


async def _created(jobs: list[tuple[str, Job]]) -> list[int]:
    def stat() -> list[int]:
        out = []
        for _, job in jobs:
            try:
                out.append(int(job.path.stat().st_mtime))
            except OSError:
                out.append(0)
        return out

    return await asyncio.to_thread(stat)


@router.get("/models", response_model=ModelList, dependencies=[READ])
async def list_models(chat: ChatDep) -> ModelList:
    models = await chat.models()
    created = await _created(models)
    return ModelList(data=[
        ModelView(id=model, created=when, owned_by="runyard")
        for (model, _), when in zip(models, created, strict=True)
    ])  # fmt: skip


@router.get("/models/{model:path}", response_model=ModelView, dependencies=[READ])
async def get_model(model: ModelId, chat: ChatDep) -> ModelView:
    job = await chat.job_for(model)
    (created,) = await _created([(model, job)])
    return ModelView(id=model, created=created, owned_by="runyard")


@router.post(
    "/chat/completions",
    dependencies=[SUBMIT],
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "the completion; with stream=true, its chunks as SSE"}},
)  # fmt: skip
async def chat_completions(
    body: ChatRequest,
    request: Request,
    chat: ChatDep,
    settings: SettingsDep,
    hub: HubDep,
    follow_log: LogFollowerDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    job = await chat.job_for(body.model)
    messages = [m.plain() for m in body.messages]
    principal = str(getattr(request.state, "principal", "anonymous"))
    run, created = await chat.start(
        job, messages, principal=principal, idempotency_key=idempotency_key,
        retried=_retried(request.headers.get("x-stainless-retry-count")),
    )  # fmt: skip
    headers = {"X-Runyard-Run-Id": run.id, "Location": f"/v1/runs/{run.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    chat_table = job.spec.openai
    assert chat_table is not None  # noqa: S101  job_for gives only jobs that opted in
    prompt = render_text(messages)
    if body.stream:
        plan = StreamPlan(
            run=run, model=body.model, prompt=prompt,
            include_usage=body.stream_options is not None and body.stream_options.include_usage,
            cancel_on_disconnect=chat_table.cancel_on_disconnect,
        )  # fmt: skip
        events = completion_events(chat, follow_log, plan)
        response = sse_response(settings, hub, events, fell_behind(chat, run))
        response.headers.update(headers)
        return response
    with chat.callers.waiting(run.id) as alone:
        ended = await _until_end_or_gone(chat, hub, run, request.receive)
        if ended is None:  # the caller went away; nobody reads this
            if chat_table.cancel_on_disconnect and alone():  # no retry of it waits on it
                await chat.runs.cancel(run.id)
            return Response(status_code=499)
    answer = await chat.answer(ended)
    completion = ChatCompletion(
        id=f"chatcmpl-{ended.id}", created=int(ended.created_at), model=body.model,
        choices=[Choice(message=AnswerMessage(content=answer.text),
                        finish_reason="length" if answer.truncated else "stop")],
        usage=usage(prompt, answer.text),
    )  # fmt: skip
    return JSONResponse(completion.model_dump(), headers=headers)


def _retried(count: str | None) -> bool:
    """Whether the openai SDK says this is a retry (`x-stainless-retry-count: N`, N >= 1).
    Read here rather than declared: it is the SDK's bookkeeping, not part of the API."""
    return count is not None and count.isascii() and count.isdigit() and int(count[:9]) > 0


async def _until_end_or_gone(
    chat: ChatService, hub: StreamHub, run: Run, receive: Receive
) -> Run | None:
    """The run once it has ended, or None as soon as the caller disconnects (the body is
    read: what the connection says next is that it is gone). A server shutting down answers
    503 at once: the run goes on, and the SDK's retry attaches to it wherever it is asked."""
    waiting = asyncio.ensure_future(chat.until_end(run))
    gone = asyncio.ensure_future(client_gone(receive))
    closing = asyncio.ensure_future(_shutdown(hub, run.id))
    tasks = (waiting, gone, closing)
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if not waiting.cancelled() and waiting.result().state.terminal:
        return waiting.result()
    if not waiting.cancelled() or not closing.cancelled():  # shutting down (not ended)
        raise UnavailableError(
            f"the server is shutting down; run {run.id} goes on: ask again to get its answer"
        )
    return None


async def _shutdown(hub: StreamHub, run_id: str) -> None:
    """Returns when the server starts to shut down (its streams are closed)."""
    with hub.changes.watch(run_id) as changed:
        while not hub.changes.closed:
            await changed.wait(3600.0)  # woken by the close; a change of the run: look again
