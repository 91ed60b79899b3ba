"""Forwarding a request about a run's files to the server that holds them, and nothing else.

A route that reads logs or artifacts declares `ON_OWNER` after its role guard: once the
caller is authorised here, the request goes on to the owning server and its answer (a file,
a byte range, a live SSE stream) is relayed as it comes.

The relay cannot be steered. Only the route templates in `RELAYED` are forwarded (HEAD
wherever GET is); the forwarded request is rebuilt from them: the run id and artifact path
validated and re-encoded segment by segment, only the query parameters and headers the route
reads, each validated. It carries no token, but a relay claim signed with the cluster secret
naming the caller's own role (auth.RelaySigner), never more. A client's own forwarding
headers are not claims: they are ignored. A request relayed to us is served here, or refused
if the files moved meanwhile, so nothing loops.

The answer is shaped here too: a member may be broken or compromised, and what it says goes
out under this server's name, to a dashboard on this origin. Only a status the route answers
is relayed (anything else is a 502 naming the member), and of its headers only those that
describe the data, each checked; the rest (the security headers of a file or a log, a stream's
caching) are set here as this server's own route sets them.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import structlog
from fastapi import Depends, FastAPI, Request
from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.types import Scope

from runyard.api.deps import OwnerOfDep, RelaySignerDep, relay_peers, relay_signer
from runyard.api.middleware.head_as_get import ASKED_HEAD
from runyard.api.problems import MEDIA_TYPE, problem
from runyard.api.relay_answer import RelayedResponse, owners_head
from runyard.api.sse import SSE_HEADERS
from runyard.auth import RELAY_HEADER, RelayClaim, RelaySigner, Role
from runyard.errors import ForbiddenPathError, InvalidInputError, UnavailableError
from runyard.models import ServerInfo
from runyard.services.file_owner import OwnerUnavailableError

if TYPE_CHECKING:
    import httpx

log = structlog.get_logger(__name__)

SERVED_BY = "x-runyard-served-by"
RUN_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
# Percent-encoded '/', '\', NUL or '.': a client hiding a separator or a dot-segment.
ENCODED_TRICK = re.compile(rb"%(2f|5c|00|2e)", re.IGNORECASE)
_HEADER_VALUE = re.compile(r"[\x20-\x7e]{1,256}")
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # an HTTP token (RFC 9110 5.6.2)
# one media type with its parameters (RFC 9110 8.3.1): never a list (a probe relayed
# `text/html, text/plain`), at most 256 characters as any header kept
_MEDIA_TYPE = re.compile(
    rf"(?=[\x20-\x7e]{{1,256}}$){_TCHARS}/{_TCHARS}"
    rf'([ \t]*;[ \t]*{_TCHARS}=({_TCHARS}|"([\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"))*'
)
_BIG = 2**63 - 1
_COUNT = re.compile(r"[0-9]{1,19}")
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,65536}")

# What a member's answer may say of itself: what the data is, how long, which part, which
# version, and when to ask again; each value as runyard's routes write it. `content-length`
# on a HEAD only (it is what GET would send): a GET's answer is framed here.
FROM_OWNER = {
    "content-type": _MEDIA_TYPE,  # a file's, any one; other answers' are checked per route
    "content-length": _COUNT,
    "content-range": re.compile(r"bytes ([0-9]{1,19}-[0-9]{1,19}|\*)/[0-9]{1,19}"),
    "accept-ranges": re.compile(r"bytes"),  # a file's: Range is served
    "etag": _HEADER_VALUE,  # a file's version, for If-Range and If-None-Match
    "last-modified": _HEADER_VALUE,  # likewise, for If-Range and If-Modified-Since
    "x-log-size": _COUNT,  # a log's size and where the next read starts
    "x-next-offset": _COUNT,
    "retry-after": re.compile(r"[0-9]{1,4}"),  # on a 503: seconds, as this server writes it
}
# What the relayed routes answer when they do not succeed, always as problem JSON: a refused
# request (400, 403, 422, 431 for a head too large), no such run or file (404), a run still
# running (409), a failed If-Match (412), a Range past the file (416), the owner's own failure
# (500, 503), a delete its full disk kept from removing anything (507). A 401 means
# the owner refused this server's claim, not the caller's token: it is answered here (503).
REFUSALS = frozenset({400, 403, 404, 409, 412, 416, 422, 431, 500, 503, 507})


def _sandboxed(_: Request) -> dict[str, str]:
    """A log's own headers (api/log_response.py): if a browser shows it after all, it runs no
    script and reaches nothing of this origin."""
    from runyard.api.routes.artifacts import FILE_CSP  # it imports this module

    return {"Content-Security-Policy": FILE_CSP}


def _as_file(request: Request) -> dict[str, str]:
    """An artifact's own headers, as routes/artifacts.py's answer gives them: sandboxed, and
    saved under its clean name (`download_name`) rather than shown, whatever the owner said."""
    from runyard.api.routes.artifacts import download_name  # it imports this module

    name = download_name(str(request.path_params.get("path", "")).rsplit("/", 1)[-1])
    # the type is the owner's (checked): given here only so that nothing guesses one
    local = FileResponse(
        "", media_type="application/octet-stream", filename=name,
        content_disposition_type="attachment", headers=_sandboxed(request),
    )  # fmt: skip
    return {k: local.headers[k] for k in ("content-security-policy", "content-disposition")}


@dataclass(frozen=True, slots=True)
class Answers:
    """What a relayed route answers when it succeeds: its statuses, its media types (None
    among them: no body; `types` None: a file's, any), and the headers this server gives such
    an answer itself, as its own route does."""

    statuses: frozenset[int]
    types: frozenset[str | None] | None
    own: Callable[[Request], dict[str, str]] | None = None


JSON = Answers(frozenset({200}), frozenset({"application/json"}))
# uncached, and unbuffered by a proxy in front, as api/sse.py's own streams
STREAM = Answers(frozenset({200}), frozenset({"text/event-stream; charset=utf-8"}),
                 lambda _: dict(SSE_HEADERS))  # fmt: skip
_LOG_TYPES = frozenset({"text/plain; charset=utf-8", "application/octet-stream"})
LOG = Answers(frozenset({200}), _LOG_TYPES, _sandboxed)
# 304: the version the caller holds is the file's (preconditions.py), no body
FILE = Answers(frozenset({200, 206, 304}), None, _as_file)


@dataclass(frozen=True, slots=True)
class Relayable:
    """A route that may be forwarded: the query parameters it reads (each with the pattern
    its value must match here; the owner checks bounds as for any request), the request
    headers it reads, what it answers, and the role it needs (carried when authentication is
    off here)."""

    query: dict[str, re.Pattern[str]]
    headers: tuple[str, ...]
    answers: Answers
    role: Role = Role.READ


RELAYED: dict[tuple[str, str], Relayable] = {
    ("GET", "/v1/runs/{run_id}/logs"): Relayable(
        {"offset": _COUNT, "limit": _COUNT, "attempt": _COUNT}, ("accept",), LOG
    ),
    ("GET", "/v1/runs/{run_id}/logs/stream"): Relayable(
        {"offset": _COUNT, "attempt": _COUNT}, ("accept", "last-event-id"), STREAM
    ),
    ("GET", "/v1/runs/{run_id}/events"): Relayable(
        {"after": _COUNT}, ("accept", "last-event-id"), STREAM
    ),
    ("GET", "/v1/runs/{run_id}/artifacts"): Relayable(
        {"cursor": _CURSOR, "limit": _COUNT}, ("accept",), JSON
    ),
    ("GET", "/v1/runs/{run_id}/artifacts/{path}"): Relayable(
        {},
        (
            "accept",
            "range",
            "if-range",
            "if-match",
            "if-none-match",
            "if-modified-since",
            "if-unmodified-since",
        ),
        FILE,
    ),
    ("DELETE", "/v1/runs/{run_id}"): Relayable(
        {}, (), Answers(frozenset({204}), frozenset({None})), Role.ADMIN
    ),
}
# HEAD asks for GET's answer without its body (RFC 9110 9.3.2): answered here, it would
# describe this server's empty data directory, not the owner's files.
_AS_METHOD = {"HEAD": "GET"}
_CONVERTOR = re.compile(r"\{path:[a-z]+\}")  # "{path:path}", "{path:anypath}": one template


class ForwardToOwner(Exception):
    def __init__(self, server: ServerInfo, target: str, route: Relayable) -> None:
        super().__init__(server.id)
        self.server = server
        self.target = target  # the re-encoded path and query to request there
        self.route = route


def verify_relay(signer: RelaySigner, scope: Scope) -> RelayClaim | None:
    """The verified relay claim a request carries, if any: checked once per request (a nonce
    is good for one use) and kept in its state for the guards (api/security.py)."""
    state = scope.setdefault("state", {})
    if "relay_claim" not in state:
        header = Headers(scope=scope).get(RELAY_HEADER)
        claim = None
        if header is not None:
            target = scope.get("raw_path") or scope["path"].encode()
            if scope.get("query_string"):
                target += b"?" + scope["query_string"]
            claim = signer.verify(header, scope["method"], target)
        state["relay_claim"] = claim
    found: RelayClaim | None = state["relay_claim"]
    return found


async def _on_owner(
    request: Request, run_id: str, owner_of: OwnerOfDep, signer: RelaySignerDep
) -> None:
    if not RUN_ID.fullmatch(run_id):
        return  # no run has such an id: the local handler answers
    owner = await owner_of(run_id, _asked_attempt(request))
    if verify_relay(signer, request.scope) is not None:
        if owner is not None:  # the run moved on since the relaying server looked
            raise UnavailableError(
                f"run {run_id}'s files are now on server {owner.id!r}; retry", retry_after_s=1
            )
        return  # relayed to us: the files are here
    if owner is None:
        return
    template = _CONVERTOR.sub("{path}", getattr(request.scope.get("route"), "path", ""))
    route = _relayable(request.method, template)
    if route is None:
        return  # not a relayable route: never forwarded, answered here
    raise ForwardToOwner(owner, _target(request, template, route, run_id), route)


async def _on_owner_if_alive(
    request: Request, run_id: str, owner_of: OwnerOfDep, signer: RelaySignerDep
) -> None:
    """Events are in the store: the owner tails progress live, but if it is gone the
    recorded events are served here."""
    with contextlib.suppress(OwnerUnavailableError):
        await _on_owner(request, run_id, owner_of, signer)


ON_OWNER = Depends(_on_owner)
ON_OWNER_IF_ALIVE = Depends(_on_owner_if_alive)


def _asked_attempt(request: Request) -> int | None:
    """The attempt a log request names (`?attempt=`, else a stream's `Last-Event-ID:
    ATTEMPT:OFFSET`), read as the routes read it; None if none, or none readable (the route
    answers that)."""
    raw = request.query_params.get("attempt")
    if raw is None:
        last = request.headers.get("last-event-id", "")
        raw = last.partition(":")[0] if ":" in last else None
    if raw is None or not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        return None
    return int(raw)


def _relayable(method: str, template: str) -> Relayable | None:
    """The route `method template` is forwarded as, if it is forwarded at all."""
    return RELAYED.get((_AS_METHOD.get(method, method), template))


def _target(request: Request, template: str, route: Relayable, run_id: str) -> str:
    """The path and query to request on the owner, rebuilt from validated parts."""
    path = template.replace("{run_id}", quote(run_id, safe=""))
    if "{path}" in template:
        path = path.replace("{path}", _artifact_path(request))
    query = []
    for name, pattern in route.query.items():
        text = request.query_params.get(name)
        if text is None:
            continue
        if not pattern.fullmatch(text):
            raise InvalidInputError(f"query parameter {name} is malformed", field=name)
        query.append((name, text))
    return f"{path}?{urlencode(query)}" if query else path


def _artifact_path(request: Request) -> str:
    """The artifact path, each segment checked and percent-encoded on its own (a newline in
    a file name included): no dot segment, empty segment or NUL ever reaches the owner."""
    raw = request.scope.get("raw_path") or b""
    if ENCODED_TRICK.search(raw.split(b"/artifacts/", 1)[-1]):
        raise ForbiddenPathError(
            "encoded separators and dots are refused in artifact paths", field="path"
        )
    segments = str(request.path_params.get("path", "")).split("/")
    for segment in segments:
        if segment in ("", ".", "..") or "\0" in segment:
            raise ForbiddenPathError(
                "artifact paths are relative, without empty, '.' or '..' segments or NUL",
                field="path",
            )
    return "/".join(quote(segment, safe="") for segment in segments)


def _headers(request: Request, route: Relayable) -> list[tuple[str, str]]:
    """Every line of each header the route takes, as it came: two Range lines are refused by
    the owner as from the caller, not the first alone served."""
    kept = []
    for name in route.headers:
        for value in request.headers.getlist(name):
            if not _HEADER_VALUE.fullmatch(value):
                raise InvalidInputError(f"header {name} is malformed", field=name)
            kept.append((name, value))
    return kept


async def _relay(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ForwardToOwner)  # noqa: S101  registered for this type only
    import httpx  # only a cluster relays, and its Runtime has loaded httpx already

    client = relay_peers(request).to(exc.server)
    signer = relay_signer(request)
    state: dict[str, Any] = request.scope.get("state", {})
    url = httpx.URL(f"{exc.server.url}{exc.target}")
    headers = httpx.Headers(_headers(request, exc.route))
    # the bytes as the owner's route made them: a compressing proxy on the way would send
    # an encoding this answer, which keeps no Content-Encoding of the member's, could not say
    headers["accept-encoding"] = "identity"
    if "request_id" in state:
        headers["x-request-id"] = state["request_id"]  # one id across both servers' logs
    role = state.get("role")
    headers[RELAY_HEADER] = signer.sign(
        _method(request), url.raw_path, exc.server.id, str(state.get("principal", "anonymous")),
        role if isinstance(role, Role) else exc.route.role,  # auth off here: the route's role
    )  # fmt: skip
    try:
        upstream = await owners_head(
            client.send(client.build_request(_method(request), url, headers=headers), stream=True),
            request.receive,
            client.timeout.read,
        )
        if upstream is None:
            return Response(status_code=499)  # the caller left: nobody reads this
    except httpx.HTTPError as error:
        return problem(503, OwnerUnavailableError.title, f"server {exc.server.id!r}, which "
                       f"holds the files of this run, did not answer: {error!r}",
                       OwnerUnavailableError.slug, {"Retry-After": "5"})  # fmt: skip

    if upstream.status_code == 401:
        await upstream.aclose()
        log.warning("relay_claim_refused", server=exc.server.id, path=request.url.path)
        return problem(503, OwnerUnavailableError.title, f"server {exc.server.id!r}, which holds "
                       "the files of this run, refused this server's relay (it restarted since "
                       "the relay was signed, or the servers' secrets or clocks differ); retry",
                       OwnerUnavailableError.slug, {"Retry-After": "1"})  # fmt: skip
    try:
        kept = _shaped(upstream, exc.route.answers, request)
    except InvalidAnswerError as error:
        await upstream.aclose()
        log.warning("relay_refused", server=exc.server.id, path=request.url.path, why=str(error))
        return problem(502, "Invalid answer from owner", f"server {exc.server.id!r}, which "
                       f"holds the files of this run, answered {error}: not relayed",
                       "owner-invalid-answer")  # fmt: skip
    kept[SERVED_BY] = exc.server.id
    return RelayedResponse(upstream, kept, exc.server.id)


def _method(request: Request) -> str:
    """What the caller asked: a HEAD answered as its route's GET (head_as_get.py) is
    relayed as a HEAD, so that the owner's answer keeps its Content-Length."""
    return "HEAD" if request.scope.get(ASKED_HEAD) else request.method


class InvalidAnswerError(Exception):
    """A member's answer that none of runyard's routes would give: not relayed."""


def _shaped(upstream: httpx.Response, answers: Answers, request: Request) -> dict[str, str]:
    """The headers the member's answer goes out with: those of FROM_OWNER it sent, checked,
    and this server's own where its route would add them."""
    status, found = upstream.status_code, upstream.headers
    if status in answers.statuses:
        types, own = answers.types, answers.own(request) if answers.own else {}
    elif status in REFUSALS:
        types, own = frozenset({MEDIA_TYPE}), {}
    else:
        raise InvalidAnswerError(f"with status {status}, which no relayed route answers")
    if types is not None and found.get("content-type") not in types:
        raise InvalidAnswerError(f"a {status} of type {found.get('content-type')!r}")
    kept = {}
    for name, pattern in FROM_OWNER.items():
        value = found.get(name)
        if value is None or (name == "content-length" and _method(request) != "HEAD"):
            continue
        if not pattern.fullmatch(value):
            raise InvalidAnswerError(f"a malformed {name} header")
        kept[name] = value
    return {**kept, **own}


def install(app: FastAPI, signer: RelaySigner) -> None:
    app.state.relay_signer = signer
    app.add_exception_handler(ForwardToOwner, _relay)
