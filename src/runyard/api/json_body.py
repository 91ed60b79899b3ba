"""A request's JSON body, read as JSON is written, on every route that takes one.

Python's JSON reader, which FastAPI uses, and pydantic's take more than JSON (a probe): the
same key twice, the last winning (`{"job": "true", "job": "hello"}` ran `hello`, and a proxy,
a log or a firewall that reads the first saw another request than the one run); UTF-16 and
UTF-32, guessed from the first bytes, and a UTF-8 byte order mark; a body in any
Content-Encoding, read as if plain; any Content-Type, or none, answered with a 422 that
blamed the body. A route with a JSON body (`JSONBodyRoute`) takes `application/json` alone
(415 naming the header otherwise), no Content-Encoding but `identity` (415), UTF-8 (400
`unreadable-body`), and no key twice in any object (422 naming where, `body.params.seed`);
a syntax error is FastAPI's 422, naming the character, as before.
The fast submit path (api/fast_submit.py) hands what it would refuse to the declared route."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from runyard.api.problems import client_left
from runyard.errors import InvalidInputError, RunyardError

MEDIA_TYPE = "application/json"
# read on the event loop up to this size; a larger body (to the cap, 1 MiB by default) on a
# thread: a MiB of small objects takes ~60 ms with the check for keys given twice
SMALL_BODY = 64 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class UnsupportedMediaTypeError(RunyardError):
    """A body sent as something other than plain JSON (its type, or its encoding)."""

    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class UnreadableBodyError(RunyardError):
    status, title, slug = 400, "Unreadable body", "unreadable-body"


def check_headers(headers: Headers, refused: type[RunyardError], named: bool = True) -> None:
    """One Content-Type, `application/json`, and the body as it is (no Content-Encoding but
    identity): else `refused`, naming the header if `named`."""
    sent = headers.getlist("content-type")
    if len(sent) != 1 or sent[0].split(";", 1)[0].strip().lower() != MEDIA_TYPE:
        shown = "none" if not sent else ", ".join(repr(s[:100]) for s in sent[:2])
        raise refused(
            f"the body must be JSON, sent with Content-Type: {MEDIA_TYPE}, once (the "
            f"request's: {shown})", **_field("header.Content-Type", named),
        )  # fmt: skip
    if not utf8_charset(sent[0]):
        raise refused(
            f"JSON is read as UTF-8 (RFC 8259 8.1): a charset but utf-8 is not taken (the "
            f"request's: {sent[0][:100]!r})", **_field("header.Content-Type", named),
        )  # fmt: skip
    as_it_is(headers, refused, named)


def utf8_charset(content_type: str) -> bool:
    """Whether a JSON Content-Type names no charset but UTF-8. RFC 8259 defines none and has
    JSON read as UTF-8, but a reader that honours `charset=latin-1` reads other text from
    the same bytes than this server does (a probe: taken, and read as UTF-8)."""
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in UTF8:
            return False
    return True


UTF8 = ("utf-8", "utf8")


def as_it_is(
    headers: Headers, refused: type[RunyardError] = UnsupportedMediaTypeError, named: bool = True
) -> None:
    """A body is taken as it is sent, never decoded: one with a Content-Encoding but identity
    (gzip, br) is `refused`; read as if plain, an upload stored the compressed bytes under
    the client's name and a multipart body was parsed as if it were not compressed."""
    codings = headers.getlist("content-encoding")
    if any(coding.strip().lower() != "identity" for coding in codings):
        shown = ", ".join(repr(coding[:40]) for coding in codings[:2])
        raise refused(
            f"the body must be sent as it is (Content-Encoding: {shown} is not taken)",
            **_field("header.Content-Encoding", named),
        )  # fmt: skip


def _field(name: str, named: bool) -> dict[str, str]:
    return {"field": name} if named else {}


def read_json(body: bytes) -> Any:
    """The body's JSON value: UTF-8, every key once in its object. JSONDecodeError for a
    syntax error, UnreadableBodyError for the rest of what is not JSON, InvalidInputError
    naming a key given twice."""
    try:
        text = body.decode("utf-8")
        twice: list[dict[str, Any]] = []
        value = json.loads(text, object_pairs_hook=_noting(twice))
    except UnicodeDecodeError as exc:
        raise UnreadableBodyError(
            f"the body cannot be read as JSON: not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    except json.JSONDecodeError:
        raise  # a syntax error: FastAPI's 422 names the character and what was expected there
    except RecursionError:
        raise UnreadableBodyError(
            "the body cannot be read as JSON: nested too deeply for the JSON reader"
        ) from None
    except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string ..."
        why = str(exc).split("; use ", 1)[0][:200]
        raise UnreadableBodyError(f"the body cannot be read as JSON: {why}") from None
    if twice:
        where, key = _twice_at(value, twice[0])
        raise InvalidInputError(
            f"the key {_shown(key)} is given twice in one object: which one counts is a "
            "guess every reader makes its own way", field=where,
        )  # fmt: skip
    return value


def duplicate_free(body: bytes) -> bool:
    """Whether the body, read as JSON, gives no key twice (False if it cannot be read)."""
    twice: list[dict[str, Any]] = []
    try:
        json.loads(body, object_pairs_hook=_noting(twice))
    except (ValueError, RecursionError):
        return False
    return not twice


def _noting(twice: list[dict[str, Any]]) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    def made(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        value = dict(pairs)
        if len(value) != len(pairs) and not twice:
            twice.append(value)  # the first object found with a key twice (inner ones first)
            value["\0twice"] = _first_twice(pairs)
        return value

    return made


def _first_twice(pairs: list[tuple[str, Any]]) -> str:
    """The first key given again. Linear (a set): a pass that rebuilt what came before for
    each key took 34 s of the event loop on 40,000 keys, the last one twice."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    return ""  # never: called only when a key is given twice


def _twice_at(value: Any, found: dict[str, Any]) -> tuple[str, str]:
    """(where `found` is in the body, the key it was given twice)."""
    key = found.pop("\0twice")
    stack: list[tuple[Any, str]] = [(value, "body")]
    while stack:
        item, where = stack.pop()
        if item is found:
            return f"{where}.{_shown(key)}", key
        if isinstance(item, dict):
            stack.extend((v, f"{where}.{_shown(k)}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{where}.{i}") for i, v in enumerate(item))
    return "body", key  # never: the object is in the value it was read into


def _shown(key: str) -> str:
    """A key as a field's name: as it is when plain, else quoted and escaped, cut short."""
    if _PLAIN_KEY.fullmatch(key):
        return key
    return ascii(key[:40]) + ("…" if len(key) > 40 else "")


class JSONBodyRoute(APIRoute):
    """A route whose body, if it takes one, is read by `read_json` after `check_headers`,
    then handed to FastAPI as read."""

    refused: ClassVar[type[RunyardError]] = UnsupportedMediaTypeError
    names_header: ClassVar[bool] = True  # in the problem's `field`

    def parse(self, body: bytes) -> Any:
        return read_json(body)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def strict(request: Request) -> Response:
            if request.method not in BODY_METHODS:
                return await handler(request)
            check_headers(request.headers, self.refused, self.names_header)
            checked = _CheckedRequest(request.scope, request.receive)
            try:
                body = await checked.body()
            except ClientDisconnect:
                raise client_left() from None  # what FastAPI answers then, not a 500
            if body:  # none: FastAPI's 422 names the missing body
                try:
                    small = len(body) <= SMALL_BODY
                    checked.parsed = (
                        self.parse(body) if small else await asyncio.to_thread(self.parse, body)
                    )
                except json.JSONDecodeError as exc:
                    checked.syntax = exc  # raised where FastAPI reads the body: its 422
            return await handler(checked)

        return strict


class _CheckedRequest(Request):
    """The request, its body parsed once: FastAPI reads what was checked."""

    parsed: Any = None
    syntax: json.JSONDecodeError | None = None

    async def json(self) -> Any:
        if self.syntax is not None:
            raise self.syntax
        return self.parsed
