"""Errors of the OpenAI-compatible routes in OpenAI's shape, `{"error": {"message", "type",
"param", "code"}}`, with the status codes the `openai` SDK maps to its exceptions. The rest of
the API answers RFC 9457 problems (api/problems.py); these routes reshape the same problem."""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PATHS = ("/v1/chat/", "/v1/models")
# OpenAI's other endpoints, which this server does not have: an SDK's call of one (the
# Responses API its documentation now leads with, the legacy completions, embeddings) is
# told so in OpenAI's shape, as OpenAI answers a URL it does not know. Not /v1/batches nor
# /v1/uploads: those are runyard's own.
ELSEWHERE = frozenset({
    "completions", "responses", "embeddings", "moderations", "audio", "images", "assistants",
    "threads", "vector_stores", "fine_tuning", "realtime", "conversations", "containers",
    "evals",
})  # fmt: skip
SERVED = "this server's OpenAI-compatible API is POST /v1/chat/completions and GET /v1/models"

_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "invalid_request_error", 409: "conflict_error", 413: "invalid_request_error",
    422: "invalid_request_error", 429: "rate_limit_error",
}  # fmt: skip
_CODES = {"not-found": "model_not_found", "queue-full": "queue_full", "unauthorized":
          "invalid_api_key", "forbidden": "insufficient_role"}  # fmt: skip


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail


def applies(path: str) -> bool:
    return path.startswith(PATHS) or path == "/v1/chat" or _elsewhere(path)


def _elsewhere(path: str) -> bool:
    """/v1/NAME or below it, NAME one of OpenAI's other endpoints."""
    top, v1, name = [*path.split("/", 3), "", ""][:3]
    return top == "" and v1 == "v1" and name in ELSEWHERE


def error_type(status: int) -> str:
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def body(status: int, message: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type(status), "param": param,
                      "code": code}}  # fmt: skip


def _param(problem: dict[str, Any]) -> str | None:
    field = problem.get("field")
    errors = problem.get("errors")
    if field is None and isinstance(errors, list) and errors:
        field = errors[0].get("field")
    if not isinstance(field, str):
        return None
    # FastAPI names a body field from the body itself ("body.messages.0.role"); OpenAI
    # names it from the request's top ("messages.0.role"); a job param is the conversation
    return "messages" if field.startswith("params.") else field.removeprefix("body.")


def reshape(
    response: Response, where: str, status: int | None = None, retry_after_ms: int | None = None
) -> Response:
    """The same error, OpenAI-shaped; `status` overrides the problem's own. `where` is the
    request's method and path."""
    problem = json.loads(bytes(response.body))
    status, headers, content = _reshaped(
        problem, status or response.status_code, dict(response.headers), retry_after_ms, where
    )
    return JSONResponse(content, status, headers=headers)


def _reshaped(
    problem: dict[str, Any],
    status: int,
    headers: dict[str, str],
    retry_after_ms: int | None,
    where: str,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    slug = str(problem.get("type", "")).rsplit(":", 1)[-1]
    if slug == "http-404":  # no such route: which URL, as OpenAI says it, and what there is
        problem = {**problem, "detail": f"Invalid URL ({where}): {SERVED}"}
    code = problem.get("code") or _CODES.get(slug, slug.replace("-", "_") or None)
    headers = {k: v for k, v in headers.items() if k.lower() not in _OWN_HEADERS}
    retry_after = problem.get("retry_after")
    if status == 429 and isinstance(retry_after, int | float):
        ms = retry_after_ms if retry_after_ms is not None else math.ceil(retry_after * 1000)
        headers["retry-after-ms"] = str(ms)
    if status == 409 or slug == "run-failed":
        # the SDK retries 409 and 5xx: the same request would get the same answer
        headers["x-should-retry"] = "false"
    run_id = problem.get("run_id")
    if isinstance(run_id, str):
        headers["x-runyard-run-id"] = run_id
    message = str(problem.get("detail") or problem.get("title") or "error")
    param = _param(problem)
    if status == 422 and param is not None and param.startswith("header."):
        status = 400  # a header given twice: a malformed request, as OpenAI answers one
    if slug == "invalid-input":  # fields named as the request names them (see _param)
        message = message.replace("body.", "")
    return status, headers, body(status, message, param, code)


_OWN_HEADERS = frozenset({"content-type", "content-length"})


class OpenAIShape:
    """Reshapes the problems that middleware sends before any route (401 without a token,
    413 over the body cap, 422 for a control character in the path) on these routes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not applies(scope["path"]):
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def reshaping(message: Message) -> None:
            if message["type"] == "http.response.start" and _is_problem(message):
                held.update(message)
                return
            if not held or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in held["headers"]}
            status, out, content = _reshaped(
                json.loads(b"".join(chunks)), held["status"], headers, None,
                f"{scope['method']} {scope['path']}",
            )  # fmt: skip
            data = json.dumps(content).encode()
            raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out.items()]
            raw += [(b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode())]  # fmt: skip
            await send({"type": "http.response.start", "status": status, "headers": raw})
            await send({"type": "http.response.body", "body": data})

        await self.app(scope, receive, reshaping)


def _is_problem(message: Message) -> bool:
    return any(
        k.lower() == b"content-type" and v.startswith(b"application/problem+json")
        for k, v in message.get("headers", [])
    )
