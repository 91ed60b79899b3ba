"""What the Python client holds a server's answers to: a server may be anyone's (a wrong
`--server`, a proxy in between, a hostile host), and its answers are input like any other.

An answer is read to at most MAX_ANSWER_BYTES; one sent compressed is refused unread (the
client asks for none: httpx inflated each piece whole before the cap saw it); anything but a
2xx is an error (a runyard server never redirects); an answer that cannot be read is a
ClientError, never a traceback from deep in a parser; a file an answer names is written
inside the folder asked for, never through `..`, an absolute path or a link."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

if TYPE_CHECKING:  # imported when a client is made: the CLI starts without it
    import httpx
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")

MAX_ANSWER_BYTES = 64 * 2**20  # a page of runs is a few hundred KiB; an error a few hundred B
MAX_ERROR_TEXT = 500
MAX_PAGES = 100_000  # pages of one listing: a cursor that never ends is the server's fault
MIN_RATE, RATE_GRACE_S = 1024.0, 60.0  # an answer slower than 1 KiB/s after a minute is given up


class ClientError(Exception):
    """An answer the client cannot use (too large, not JSON, not a runyard answer), or a
    server that does not answer as one."""


@cache
def capped_client() -> type[httpx.Client]:
    """httpx's client, with every answer not streamed read to at most MAX_ANSWER_BYTES (a
    400 MB body took 2 GB of the caller's memory before anything looked at it)."""
    import httpx

    class CappedClient(httpx.Client):
        def _init_transport(self, *args: Any, **kw: Any) -> httpx.BaseTransport:
            """httpx's own transport for direct connections, its connections opened through
            client_deadline's backend (a proxy from the environment is httpx's alone: the
            head deadline does not reach through it)."""
            from runyard.client_deadline import HeadTransport

            given: httpx.BaseTransport | None = kw.get("transport")
            return given if given is not None else HeadTransport(kw.get("verify", True))

        def build_request(self, *args: Any, **kw: Any) -> httpx.Request:
            """httpx's request, or a ClientError: an argument that makes no URL (a run id
            of 100,000 characters: httpx's InvalidURL, no HTTPError, was a traceback)."""
            try:
                return super().build_request(*args, **kw)
            except httpx.InvalidURL as exc:
                raise ClientError(f"no request can be made of these arguments: {exc}") from None

        def send(
            self, request: httpx.Request, *, stream: bool = False, **kw: Any
        ) -> httpx.Response:
            from runyard.client_deadline import head_within

            with head_within(request):
                resp = super().send(request, stream=True, **kw)
            coding = resp.headers.get("content-encoding", "")
            if coding.strip().lower() not in ("", "identity"):
                resp.close()
                raise ClientError(
                    f"the server's answer to {request.url.path} is compressed "
                    f"({coding[:40]!r}): a runyard server never compresses (the client asks "
                    "for none), and httpx would inflate each piece whole before any cap "
                    "looked at it: 1.8 KB gzipped twice took 2 GB"
                )
            if stream:
                return resp
            try:
                body = read_capped(resp, MAX_ANSWER_BYTES)
            finally:
                resp.close()
            return httpx.Response(
                resp.status_code, headers=resp.headers, content=body, request=request
            )

    return CappedClient


def read_capped(
    resp: httpx.Response, cap: int, min_rate: float = MIN_RATE, grace_s: float = RATE_GRACE_S
) -> bytes:
    """The body, up to `cap` bytes, coming at `min_rate` bytes/s at least once `grace_s` have
    passed (httpx's timeout is per read: a byte every few seconds held a caller for ever)."""
    over = (
        f"the server's answer to {resp.request.method} {resp.request.url.path} is over "
        f"{cap // 2**20} MiB: not a runyard server's answer"
    )
    return b"".join(paced(resp, cap, over, min_rate, grace_s))


def paced(
    resp: httpx.Response, cap: int | None, over: str, min_rate: float = MIN_RATE,
    grace_s: float = RATE_GRACE_S,
) -> Iterator[bytes]:  # fmt: skip
    """The body's pieces as they come: a ClientError (`over`) past `cap` bytes, or once it
    comes at under `min_rate` bytes/s after `grace_s` (a download too: a byte every few
    seconds, or a body without end, held its caller for ever and filled its disk)."""
    total = 0
    began = time.monotonic()
    for piece in resp.iter_bytes():
        total += len(piece)
        if cap is not None and total > cap:
            raise ClientError(over)
        yield piece
        spent = time.monotonic() - began
        if spent > grace_s and total < min_rate * spent:
            raise ClientError(
                f"the server's answer to {resp.request.url.path} comes at under "
                f"{min_rate:g} bytes/s ({total} bytes in {spent:.0f} s): given up"
            )


def redirected(resp: httpx.Response) -> dict[str, Any]:
    """The problem to raise for a 3xx: a runyard server never redirects, and following one
    would send the token elsewhere."""
    where = resp.headers.get("location", "")[:200]
    return {"detail": f"the server answered {resp.status_code} (to {where!r}); a runyard "
                      "server never redirects: check --server"}  # fmt: skip


def parsed(resp: httpx.Response) -> Any:
    """The answer's JSON, or a ClientError saying why it is none."""
    try:
        return resp.json()
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ClientError(
            f"the server's answer to {resp.request.url.path} is not JSON it can read: "
            f"{type(exc).__name__}: {str(exc)[:200]}"
        ) from None


def valid(model: type[M], data: Any, what: str) -> M:
    """`data` as `model`, or a ClientError with how many problems and the first one. The
    models' lists stop at their first bad item (schemas.py: fail_fast), and the error is
    never rendered whole: a 3 MB answer of a million `{}` made 18 errors each, and its text
    took 20 GB."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])[:200]
        raise ClientError(
            f"the server's answer to {what} is not a runyard answer: {exc.error_count()} "
            f"problem(s), the first at {where or 'the top'}: {str(first['msg'])[:200]}"
        ) from None


def event_data(data: str, what: str) -> dict[str, Any]:
    """A stream event's JSON object, or a ClientError saying why it is none."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ClientError(f"the server's {what} event is not JSON it can read: {exc}") from None
    if not isinstance(value, dict):
        raise ClientError(f"the server's {what} event is not an object")
    return value


def event_int(data: str, what: str, key: str) -> int:
    value = event_data(data, what).get(key)
    if type(value) is not int or value < 0:
        raise ClientError(f"the server's {what} event has no {key} that is a whole number")
    return value


def segment(value: str) -> str:
    """One path segment of a request, percent-encoded whole: an id a user typed cannot add a
    segment, a query or a dot-segment to the path it is put in (quote keeps dots). An empty
    one is refused here: it named the collection (`GET /v1/runs/`, answered with a redirect
    that the client then blamed on a wrong --server)."""
    if not value:
        raise ClientError("an empty id or name names nothing on the server")
    return (
        quote(value, safe="").replace(".", "%2E") if value in (".", "..") else quote(value, safe="")
    )


def destination(root: Path, path: str) -> Path:
    """Where an artifact named `path` by the server goes under `root`: refused (ClientError)
    if it would land anywhere else (`..`, an absolute path, a link on the way)."""
    parts = PurePosixPath(path).parts
    if (
        not parts
        or path.startswith("/")
        or any(p in ("..", ".", "") for p in parts)
        or ("\\" in path or "\x00" in path)
    ):
        raise ClientError(f"the server named an artifact {path!r}: not a path inside a folder")
    dest = root.joinpath(*parts)
    here = root
    for part in parts[:-1]:
        here = here / part
        if here.is_symlink():
            raise ClientError(f"{here} is a link: {path!r} is not written through it")
    if dest.is_symlink():
        raise ClientError(f"{dest} is a link: {path!r} is not written through it")
    if not os.path.realpath(dest).startswith(os.path.realpath(root) + os.sep):
        raise ClientError(f"the artifact {path!r} would be written outside {root}")
    return dest


def next_cursor(cursor: str, seen: set[str]) -> str:
    """The next page's cursor, unless the server gave it already: a listing that never ends."""
    if cursor in seen:
        raise ClientError(f"the server gave the cursor {cursor[:80]!r} twice")
    seen.add(cursor)
    return cursor


def digits(text: str, what: str) -> int:
    """An offset a server's answer gives: decimal digits only (int() also took `1_0`, and
    raised a bare ValueError for anything else)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        raise ClientError(f"{what} is not an offset: {text[:40]!r}")
    return int(text)


def log_bytes(event: str, data: str) -> bytes:
    """A log event's bytes: its text, or its base64 (checked: invalid base64 read as nothing
    lost what it held without a word)."""
    if event == "log":
        return data.encode()
    try:
        return base64.b64decode(data, validate=True)
    except ValueError:  # binascii.Error
        raise ClientError("a log.b64 event's data is not base64") from None
