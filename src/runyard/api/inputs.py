"""Input bounds at the HTTP edge: typed path/query/header params, a guard that refuses control
characters in any path or query before routing, and the bounds that depend on settings
written into the published OpenAPI document (the rules themselves live in runyard.bounds).
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import unquote_plus, unquote_to_bytes

from fastapi import FastAPI, Header, Path, Query
from pydantic import BeforeValidator, GetJsonSchemaHandler, StringConstraints
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from runyard.api import openai_errors
from runyard.api.middleware.change_conditions import CHANGES
from runyard.api.middleware.request_cap import EXEMPT
from runyard.bounds import ID_PATTERN, JOB_NAME_PATTERN, LINE_PATTERN, text_problem
from runyard.config import Settings
from runyard.errors import InvalidInputError
from runyard.services.uploads import UPLOAD_ID


class NullUnpublished:
    """On `X | None` whose None only means "not sent" (a query or header param's default):
    the schema published is X's alone, as only X is taken on the wire. The type stays
    pydantic's plain optional, validated as X, so a refusal names the param and nothing
    else. (`X | SkipJsonSchema[None]`, which hid null before, is a union of two members: each
    refusal came twice, once per member, named by pydantic's union tags:
    `header.Last-Event-ID.constrained-str` and `header.Last-Event-ID.none`.)"""

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        published = handler(schema)
        kept = [m for m in published.get("anyOf", ()) if m != {"type": "null"}]
        if "anyOf" not in published or len(kept) != 1:
            return published
        rest = {k: v for k, v in published.items() if k != "anyOf"}
        return {**kept[0], **rest}


RunId = Annotated[str, Path(pattern=ID_PATTERN, description="a run's id")]
BatchId = Annotated[str, Path(pattern=ID_PATTERN, description="a batch's id")]
ScheduleId = Annotated[str, Path(pattern=ID_PATTERN, description="a schedule's id")]
UploadId = Annotated[
    str, Path(pattern=UPLOAD_ID.pattern, description="an upload's id: the sha256 of its bytes")
]
JobNamePath = Annotated[str, Path(pattern=JOB_NAME_PATTERN, description="a job's name")]
JobFilter = Annotated[str | None, Query(pattern=JOB_NAME_PATTERN)]
IdFilter = Annotated[str | None, Query(pattern=ID_PATTERN)]
Cursor = Annotated[
    str | None, Query(pattern=ID_PATTERN, description="next_cursor of the previous page")
]
# KEY=VALUE: the key as a label key, the value one line of text (what a label may hold)
LABEL_FILTER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}=[^\x00-\x1f\x7f-\x9f]{0,256}$"
LabelFilter = Annotated[
    list[Annotated[str, StringConstraints(pattern=LABEL_FILTER_PATTERN)]],
    Query(max_length=16, description="KEY=VALUE, repeatable"),
]
# visible ASCII and spaces: it is stored and echoed back, and must survive any proxy. Not
# ending in a space: HTTP drops the leading ones (they never reach the server) and kept the
# trailing, so `k ` was another key than `k` (a duplicate run for a client or a proxy that trims)
IDEMPOTENCY_KEY_PATTERN = r"^[\x20-\x7e]*[\x21-\x7e]$"
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=IDEMPOTENCY_KEY_PATTERN),
]


def one_idempotency_key(headers: Headers) -> None:
    """Two Idempotency-Key headers are refused: the first was used and the second dropped."""
    if len(headers.getlist("idempotency-key")) > 1:
        raise InvalidInputError(
            "Idempotency-Key is given more than once", field="header.Idempotency-Key"
        )


# What the guard allows any path or query value, published for every parameter without a
# stricter bound of its own. Well inside the server's own limit on a request's head (64 KiB
# give or take one read, cli/header_timeout.py), past which it answers 431 before any of this.
MAX_PATH = 4096
MAX_QUERY_VALUE = 8192


_INT_CEILING = 2**63 - 1  # the stores' largest integer; past every size cap


def header_int(value: str | bytes) -> int | None:
    """A header's non-negative decimal integer (Content-Length), at most 2**63 - 1 (a larger
    one reads as that: past every cap); None if it is not one. Not int() alone: it refuses
    a string of over 4300 digits (ValueError), and zeros may pad a small value that far."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0")
    return _INT_CEILING if len(digits) > 19 else min(int(digits or "0"), _INT_CEILING)


# A query's integer is read as strictly as header_int reads a header's: pydantic's lax int
# took `1_0` for 10, and `+1`, ` 5`, `5.0` too, none of which a client that follows the
# schema sends; and a proxy or cache would key `1_0` apart from the `10` it means.
MAX_QUERY_INT = _INT_CEILING  # the bound of a param that has none smaller (the stores' largest)
QUERY_INT_DIGITS = len(str(MAX_QUERY_INT))  # 19: no param needs more, zeros in front or not


def _query_digits(value: object) -> object:
    """The text of an integer query param, passed on to pydantic's int only when it is 1 to
    QUERY_INT_DIGITS ASCII digits: no sign, space, underscore, point or exponent, no other
    script's digits. The bounds are the param's own (Query(ge=..., le=...)), checked after."""
    if isinstance(value, str) and not (
        value.isascii() and value.isdigit() and len(value) <= QUERY_INT_DIGITS
    ):
        raise PydanticCustomError(
            "int_parsing",
            "Input should be an integer of 1 to {most} ASCII digits, without sign, space, "
            "underscore or point",
            {"most": QUERY_INT_DIGITS},
        )
    return value


def int_query(*, ge: int, le: int, description: str | None = None) -> Any:
    """Query(ge=, le=) for every integer query param (HTTP and WebSocket): its bounds, and
    its text read by _query_digits first. The check goes after the bounds in the Query's
    metadata (outermost: it runs first), not on the type: a validator on the type leaves
    pydantic unable to set the bounds on the integer, and it publishes `ge`/`le`, which no
    OpenAPI reader knows, for minimum/maximum.
    The schema published is `integer` within those bounds, as strict as this reading: a
    client that follows it writes plain digits (JSON Schema has no pattern for an integer)."""
    param = Query(ge=ge, le=le, description=description)
    param.metadata.append(BeforeValidator(_query_digits))
    return param


def _refusal(field: str, why: str) -> bytes:
    return json.dumps({
        "type": "urn:runyard:problem:invalid-input", "title": "Invalid input", "status": 422,
        "detail": f"{field}: {why}", "field": field, "errors": [{"field": field, "message": why}],
    }, separators=(",", ":")).encode()  # fmt: skip


def control_problem(scope: Scope) -> tuple[str, str] | None:
    """(field, why) when the path or a query name/value holds a control character, or is
    longer than any route takes."""
    path = scope.get("path", "")
    if len(path) > MAX_PATH:
        return "path", f"{len(path)} characters, over the limit of {MAX_PATH}"
    bad = text_problem(path, multiline=False)
    if bad is not None:
        return "path", bad
    raw = scope.get("raw_path") or b""
    if b"%" in raw and not _utf8(unquote_to_bytes(raw)):
        # the server decodes it with U+FFFD for each bad byte: another path than the one sent
        return "path", "not valid UTF-8"
    return _query_problem(scope.get("query_string", b"").decode("latin-1"))


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _query_problem(raw: str) -> tuple[str, str] | None:
    """(field, why) for the first query parameter whose name or value is unfit."""
    for piece in raw.split("&"):  # as parse_qsl reads it, one parameter at a time
        if not piece:
            continue
        coded_name, _, coded_value = piece.partition("=")
        try:
            name = unquote_plus(coded_name, errors="strict")
        except UnicodeDecodeError:
            return "query", "a parameter name: not valid UTF-8"
        bad = text_problem(name, multiline=False)
        if bad is not None:
            return "query", f"a parameter name: {bad}"
        try:
            value = unquote_plus(coded_value, errors="strict")
        except UnicodeDecodeError:
            return f"query.{name[:64]}", "not valid UTF-8"
        bad = text_problem(value, multiline=False)
        if bad is None and len(value) > MAX_QUERY_VALUE:
            bad = f"{len(value)} characters, over the limit of {MAX_QUERY_VALUE}"
        if bad is not None:
            return f"query.{name[:64]}", bad
    return None


class ControlCharacterGuard:
    """Refuses (422) a request whose path or query holds a control character, before any
    route, dependency or relay sees it: NUL cannot be stored in PostgreSQL nor passed to a
    program, and nothing legitimate in a URL needs C0, DEL or C1."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = control_problem(scope) if scope["type"] in ("http", "websocket") else None
        if found is None:
            await self.app(scope, receive, send)
            return
        # a WebSocket's handshake is answered as a request is (the ASGI denial response):
        # a close before the accept reached its client as a bare 403
        kind = "http" if scope["type"] == "http" else "websocket.http"
        if kind != "http" and "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008})
            return
        body = _refusal(*found)
        await send({
            "type": f"{kind}.response.start", "status": 422,
            "headers": [(b"content-type", b"application/problem+json"),
                        (b"content-length", str(len(body)).encode())],
        })  # fmt: skip
        await send({"type": f"{kind}.response.body", "body": body})


def _bounded_params(op: dict[str, Any]) -> None:
    """Each path and query parameter's text: one line, its length capped, an id's pattern."""
    for param in op.get("parameters", []):
        if param.get("in") not in ("path", "query"):
            continue
        schema = param.setdefault("schema", {})
        for branch in schema.get("anyOf", [schema]):
            if branch.get("type") != "string" or "enum" in branch:
                continue
            if param["in"] == "path" and param.get("name", "").endswith("_id"):
                branch.setdefault("pattern", ID_PATTERN)  # anything else is no id: 404
            branch.setdefault("pattern", LINE_PATTERN)
            cap = MAX_QUERY_VALUE if param["in"] == "query" else MAX_PATH
            branch["maxLength"] = min(branch.get("maxLength", cap), cap)


def _guarded(op: dict[str, Any], path: str, changes: bool) -> None:
    """What the guard does to every operation, said in its parameters and answers; and, on
    one that changes something, the conditions (middleware/change_conditions.py)."""
    _bounded_params(op)
    responses = op.setdefault("responses", {})
    answers = [
        ("400", "a malformed HTTP request (the detail says what the parser refused)"),
        ("422", "invalid input"),
        # the protocol's own answers (cli/header_timeout.py, middleware/body_limit.py)
        ("431", "the request line and headers are over the server's limit (64 KiB)"),
        # errors.py: a bug's `internal`, or a stored run that cannot be read back
        ("500", "an internal error, or a run's stored record damaged (`record-damaged`)"),
    ]
    if changes:
        answers.append(("412", "an If-Match naming a tag (these resources have none), or "
                        "If-None-Match: *"))  # fmt: skip
    for code, why in answers:
        responses.setdefault(code, {
            "description": why,
            "content": {"application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"}}},
        })  # fmt: skip
    if not path.startswith(EXEMPT):  # middleware/request_cap.py, before any route
        responses.setdefault("503", {
            "description": "out of resources: RUNYARD_MAX_REQUESTS requests in progress",
            "content": {"application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"}}},
        })  # fmt: skip
    body = op.get("requestBody", {}).get("content", {})
    # api/json_body.py: another type or an encoding (the OpenAI routes answer 400, as it does)
    if "application/json" in body and not openai_errors.applies(path):
        responses.setdefault("415", {
            "description": "the body is not sent as plain JSON (Content-Type, Content-Encoding)",
            "content": {"application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"}}},
        })  # fmt: skip
    if "requestBody" in op:  # answered by the app's handlers: shaped as its 422 is
        responses.setdefault("408", {
            "description": "the body stalled: nothing for RUNYARD_HEADER_TIMEOUT_S",
            "content": dict(responses["422"].get("content", {})),
        })  # fmt: skip


def _settings_bounds(schemas: dict[str, Any], settings: Settings) -> None:
    """interval_s minimum and batch size, as this server's settings have them."""
    for name in ("ScheduleRequest", "SchedulePatch"):
        interval = schemas.get(name, {}).get("properties", {}).get("interval_s", {})
        for branch in interval.get("anyOf", []):
            if branch.get("type") == "number":
                branch.pop("exclusiveMinimum", None)
                branch["minimum"] = settings.schedule_min_interval_s
    batch = schemas.get("BatchRequest", {}).get("properties", {}).get("iterations", {})
    for branch in batch.get("anyOf", []):
        if branch.get("type") == "integer":
            branch["maximum"] = settings.max_batch


def publish(app: FastAPI, settings: Settings) -> None:
    """Write the bounds that come from settings into the OpenAPI document, so it is as strict
    as the server that serves it: interval_s minimum, batch size, every path's run id."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = build()
        _settings_bounds(doc.get("components", {}).get("schemas", {}), settings)
        for path, item in doc.get("paths", {}).items():
            for method, op in item.items():
                if isinstance(op, dict):
                    _guarded(op, path, method.upper() in CHANGES)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


MAX_FORM_PARTS = 33  # a multipart submit: the run and up to 32 files
MAX_PART_NAME = 256  # characters of a part's name (a param name, or "run")


def is_form_data(content_type: str) -> bool:
    """multipart/form-data, its parameters aside (not a type that merely begins so): what
    the body cap lets through uncapped and what the submit streams must be the same."""
    return content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"
