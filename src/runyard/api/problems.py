"""Every error answered as RFC 9457 problem JSON, mapped in this one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import structlog
from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse
from starlette.routing import Match, Mount, Router
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketState

from runyard.api import openai_errors
from runyard.api.middleware.head_as_get import full_match
from runyard.errors import MAX_MESSAGE, RunyardError, bounded, field_path

log = structlog.get_logger(__name__)
MEDIA_TYPE = "application/problem+json"
# An answer stays small whatever the request: 60,000 unknown params are not 60,000 errors
# back (7 MB for a 1 MB request), and a field is named by its first characters.
MAX_LISTED = 50
MAX_DETAILED = 10
MAX_FIELD = 200
MAX_DETAIL = MAX_DETAILED * (MAX_FIELD + MAX_MESSAGE)  # ten fields and their messages


def problem(
    status: int,
    title: str,
    detail: str,
    slug: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": f"urn:runyard:problem:{slug}",
        "title": title,
        "status": status,
        "detail": bounded(detail, MAX_DETAIL),
    }
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def client_left() -> StarletteHTTPException:
    """A client gone before its body was whole: a 400 (logged as one), not a 500 with a
    traceback (ClientDisconnect from a body being read)."""
    return StarletteHTTPException(400, "the client left before its body was whole")


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    return field_path(loc)


def shown(field: str) -> str:
    """A field as a problem names it: a character that prints as nothing or as something else
    (a control, a format mark such as U+202E, which turns the text after it around, a lone
    surrogate, which no UTF-8 encoder takes) escaped as Python writes it (`\\x01`,
    `\\u202e`): a key sent to mislead a reader is shown, not obeyed."""
    if field.isprintable():
        return field
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in field)


async def _runyard_error(request: Request, exc: Exception) -> JSONResponse:
    return problem_of(cast(RunyardError, exc), _where(request))


LOCATED = ("body", "query", "header", "path")
# set on a multipart submit's scope once its run is read: the names of its file parts. A field
# a service names from then on is in the part `run` (`body.run.params.n`), but a file param
# sent as a part, which is named as that part is (`params.model`).
FORM_FILES = "runyard.form_files"


def _where(request: Request) -> Callable[[str], str]:
    """How a field a service named (`iterations`, `params.n`, `attempt`) is named where the
    client sent it, as FastAPI names its own (`body.iterations`, `query.attempt`): a query
    parameter the request has, else a key of its JSON body. The OpenAI routes name their
    `param` as OpenAI does (bare); a form's parts are named by the part, and a key of its run
    as within the part `run`."""
    path = request.url.path
    json_body = request.scope.get("method") in ("POST", "PUT", "PATCH") and (
        request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"
    )  # fmt: skip
    query = request.query_params

    def where(field: str) -> str:
        first = field.split(".", 1)[0]
        if first in LOCATED or openai_errors.applies(path):
            return field
        if first in query:
            return f"query.{field}"
        files = request.scope.get(FORM_FILES)
        if files is not None:
            param = field.split(".", 2)[1] if first == "params" and "." in field else None
            return field if param in files else f"body.run.{field}"
        return f"body.{field}" if json_body else field

    return where


def problem_of(exc: RunyardError, where: Callable[[str], str] = str) -> JSONResponse:
    extra = {k: v for k, v in exc.extra.items() if k not in ("type", "title", "status", "detail")}
    if "errors" in extra:  # a param's: named from `params`
        extra.update(_listed([(where(f"params.{loc}"), msg) for loc, msg in extra["errors"]]))
    elif "fields" in extra:  # each named from the request's top (`sweep.n.3`)
        extra.update(_listed([(where(field), msg) for field, msg in extra.pop("fields")]))
    elif isinstance(extra.get("field"), str):  # one field: listed as the request model's are
        extra["field"] = shown(where(extra["field"]))[:MAX_FIELD]
        extra.update(_listed([(extra["field"], exc.detail)]))
    return problem(exc.status, exc.title, exc.detail, exc.slug, exc.headers or None, **extra)


class UnreadBodyValidationError(RequestValidationError):
    """Invalid input found while the request's body still comes (a multipart submit's `run`
    part, its files behind it): answered with `Connection: close`, so that the rest is not
    read and dropped before the connection could serve another request."""


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    exc = cast(RequestValidationError, exc)
    found = exc.errors()
    listed = _listed([_field_error(e) for e in found[:MAX_LISTED]], len(found))
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in listed["errors"][:MAX_DETAILED])
    close = {"Connection": "close"} if isinstance(exc, UnreadBodyValidationError) else None
    return problem(422, "Invalid input", detail, "invalid-input", close, **listed)


async def refuse_websocket(websocket: WebSocket, answer: Response, close_code: int) -> None:
    """A WebSocket refused before its handshake is accepted: the problem as an HTTP answer (the
    ASGI denial response, which uvicorn sends). A close before the accept, all a server
    without it can do, reaches a client as a bare 403, whatever the cause. Once accepted, it
    can only be closed, with `close_code`."""
    if websocket.application_state == WebSocketState.CONNECTING and (
        "websocket.http.response" in websocket.scope.get("extensions", {})
    ):
        await websocket.send_denial_response(answer)
    elif websocket.application_state != WebSocketState.DISCONNECTED:
        await websocket.close(code=close_code)


async def _websocket_invalid(websocket: WebSocket, exc: Exception) -> None:
    """A WebSocket's query the route refuses (`after=-1`): 422 naming the field, as over HTTP."""
    await refuse_websocket(websocket, await _validation_error(cast(Request, None), exc), 1008)


def _field_error(error: Any) -> tuple[str, str]:
    """(field, message) of one of FastAPI's errors. A JSON syntax error is the body's, at a
    character (FastAPI puts the offset where a field's name goes: `body.15`)."""
    loc = error["loc"]
    if error.get("type") == "json_invalid" and len(loc) == 2 and isinstance(loc[1], int):
        why = str((error.get("ctx") or {}).get("error", ""))[:200]
        return "body", f"not valid JSON at character {loc[1]}" + (f": {why}" if why else "")
    # a validator's own words, without pydantic's "Value error, " before them
    return _loc(loc), str(error["msg"]).removeprefix("Value error, ")


def _listed(errors: list[tuple[str, str]], found: int | None = None) -> dict[str, Any]:
    """A problem's `errors`: the first MAX_LISTED, and how many more were `found`."""
    found = len(errors) if found is None else found
    listed: dict[str, Any] = {
        "errors": [
            {"field": shown(f)[:MAX_FIELD], "message": bounded(m)} for f, m in errors[:MAX_LISTED]
        ]
    }
    if found > MAX_LISTED:
        listed["errors_omitted"] = found - MAX_LISTED
    return listed


METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Every method the path supports, asked of the routes themselves: each method is tried
    against them (Starlette's 405 names only the first partial match, and routes of an
    included router show no methods of their own: the Allow header came out empty). HEAD
    wherever GET is (middleware/head_as_get.py)."""
    # as the application sees the path: a mount's scope has its prefix in `root_path`
    scope = {
        **request.scope,
        "root_path": request.scope.get("app_root_path", request.scope.get("root_path", "")),
    }
    routes = [r for r in request.app.routes if not isinstance(r, Mount)]
    found = {method for method in METHODS if full_match(routes, scope, method)}
    if not found and full_match([r for r in request.app.routes if isinstance(r, Mount)],
                                scope, "GET"):  # fmt: skip
        found.add("GET")  # a mount's static files (the dashboard, the docs): its Allow was empty
    if "GET" in found:
        found.add("HEAD")
    return ", ".join(method for method in METHODS if method in found)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(StarletteHTTPException, exc)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    # the body's own refusals (middleware/body_limit.py) name themselves
    title = getattr(exc, "title", detail)
    slug = getattr(exc, "slug", f"http-{exc.status_code}")
    if exc.status_code == 404 and detail == "Not Found":  # no route took it (Starlette's)
        detail = _nothing_at(request)
    if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError | ValueError):
        # FastAPI's "There was an error parsing the body": what its JSON reader gave up on
        title, slug = "Unreadable body", "unreadable-body"
        detail = f"the body cannot be read as JSON: {_unreadable(exc.__cause__)}"
    return problem(exc.status_code, title, detail, slug, headers)


def _nothing_at(request: Request) -> str:
    """What a 404 no route took says: the method and path as routed. An id with an encoded
    slash (`/v1/runs/a%2Fb`) is routed as two segments, and its bare "Not Found" said
    nothing of why."""
    path = request.url.path
    said = f"nothing here: {request.method} {path if len(path) <= 200 else path[:199] + '…'}"
    if b"%2f" in request.scope.get("raw_path", b"").lower():
        said += " (an encoded '/' is routed as a '/': no id holds one)"
    return said


def _unreadable(cause: BaseException) -> str:
    if isinstance(cause, RecursionError):
        return "nested too deeply for the JSON reader"
    if isinstance(cause, UnicodeDecodeError):
        return f"not UTF-8 ({cause.reason} at byte {cause.start})"
    return str(cause).split("; use ", 1)[0][:200]  # "Exceeds the limit (4300 digits) ..."


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled_error", path=request.url.path, exc_info=exc)
    return problem(
        500, "Internal error", "an unexpected error occurred; see the server log", "internal"
    )


Handler = Callable[[Request, Exception], Awaitable[Response]]


class _Answered(Response):
    """What a handler returns for a WebSocket it has answered itself: Starlette sends a
    handler's answer, and a second one to a handshake is an error of the server's."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


_ANSWERED = _Answered()


def _scoped(handler: Handler, openai_status: int | None = None) -> Handler:
    """The handler, with its answer reshaped for the OpenAI-compatible routes (a malformed
    request is a 400 there, as OpenAI answers it)."""

    async def answer(request: Request, exc: Exception) -> Response:
        response = await handler(request, exc)
        if request.scope["type"] == "websocket":
            # what a WebSocket route's dependency refused (a query parameter given twice, a
            # token), or its path: sent here as the handshake's answer, and nothing returned
            # for Starlette to send again (a second answer logged an error and a traceback)
            websocket = cast(WebSocket, request)
            await refuse_websocket(websocket, response, 4000 + response.status_code)
            return _ANSWERED
        if not openai_errors.applies(request.url.path):
            return response
        where = f"{request.method} {request.url.path}"
        retry_after_ms = getattr(exc, "retry_after_ms", None)
        return openai_errors.reshape(response, where, openai_status, retry_after_ms)

    return answer


def install(app: FastAPI) -> None:
    # the other spelling of a path (a slash more or less) is redirected to here, not by
    # Starlette, whose Location was built from the request's Host header, any client's choice
    app.router.redirect_slashes = False
    app.router.default = _not_found(app.router, app.router.default)
    app.add_exception_handler(RunyardError, _scoped(_runyard_error))
    app.add_exception_handler(RequestValidationError, _scoped(_validation_error, 400))
    app.add_exception_handler(StarletteHTTPException, _scoped(_http_error))
    app.add_exception_handler(Exception, _scoped(_unexpected))
    app.add_exception_handler(WebSocketRequestValidationError, _websocket_invalid)


def _not_found(router: Router, default: ASGIApp) -> ASGIApp:
    """The router's answer to a path no route takes. A WebSocket's is a 404 problem (the
    exception handlers answer it), not Starlette's close, a bare 403. A request whose path
    a route takes with a slash more or less is redirected there, by a Location of the path
    alone (`/ui` to `/ui/`)."""

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            raise StarletteHTTPException(404, "no WebSocket is served at this path")
        if scope["type"] == "http" and (other := _other_spelling(router, scope)) is not None:
            await RedirectResponse(other, status_code=307)(scope, receive, send)
            return
        await default(scope, receive, send)

    return not_found


def _other_spelling(router: Router, scope: Scope) -> str | None:
    path: str = scope["path"]
    raw = scope.get("raw_path") or path.encode()
    if path == "/" or raw.startswith(b"//"):  # `//host/`: a Location to another host
        return None
    other = path[:-1] if path.endswith("/") else f"{path}/"
    if not any(route.matches({**scope, "path": other})[0] != Match.NONE for route in router.routes):
        return None
    location = raw[:-1] if raw.endswith(b"/") else raw + b"/"
    query = scope.get("query_string", b"")
    return (location + (b"?" + query if query else b"")).decode("latin-1")
