"""Artifact routes: list a run's declared outputs page by page, and download one (Range
supported)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Query, Request
from fastapi import Path as FastAPIPath
from fastapi.responses import FileResponse
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable, Response
from starlette.types import Receive, Scope, Send

from runyard.api.byte_ranges import parse_byte_ranges
from runyard.api.client_gone import cut
from runyard.api.deps import ArtifactPoolDep, RunsDep, SettingsDep, WorkspaceDep
from runyard.api.inputs import int_query
from runyard.api.preconditions import precondition_failed
from runyard.api.problems import problem
from runyard.api.proxy import ON_OWNER
from runyard.api.security import READ
from runyard.errors import ForbiddenPathError
from runyard.schemas import ArtifactList, ArtifactView, SkippedArtifact, problem_responses
from runyard.services.artifact_listing import (
    MAX_LISTED_PATH,
    PAGE_DEFAULT,
    PAGE_MAX,
    ArtifactPage,
    decode_cursor,
    list_page,
    workspace_usage,
)
from runyard.services.artifacts import OpenArtifact, open_artifact

router = APIRouter(
    prefix="/v1/runs/{run_id}/artifacts",
    tags=["artifacts"],
    dependencies=[READ, ON_OWNER],  # the files are where the run ran
    responses=problem_responses(401, 403, 404, 422),
)

# Percent-encoded '/', '\', NUL or '.': a client hiding a separator or a dot-segment.
_ENCODED_TRICK = re.compile(rb"%(2f|5c|00|2e)", re.IGNORECASE)
CURSOR_MAX = 65_536

log = structlog.get_logger(__name__)


@router.get("", response_model=ArtifactList)
async def get_artifacts(
    run_id: str,
    runs: RunsDep,
    workspace_of: WorkspaceDep,
    settings: SettingsDep,
    pool: ArtifactPoolDep,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX, pattern=r"^[A-Za-z0-9_-]+$")] = None,
    limit: Annotated[int, int_query(ge=1, le=PAGE_MAX)] = PAGE_DEFAULT,
) -> ArtifactList:
    run = await runs.get(run_id)  # 404 first: a cursor means nothing without its run
    after = decode_cursor(cursor) if cursor is not None else None
    workspace = workspace_of(run_id)
    patterns = run.spec.get("artifacts", [])
    walk_max = settings.artifact_walk_max
    page: ArtifactPage = await pool.run(
        lambda: list_page(workspace, patterns, after=after, limit=limit, walk_max=walk_max)
    )
    used, counted_all = 0, True
    if after is None:  # the workspace's size once, with the first page
        used, counted_all = await pool.run(lambda: workspace_usage(workspace, walk_max))
    return ArtifactList(
        workspace_bytes=used,
        next_cursor=page.next_cursor,
        partial=page.partial or not counted_all,
        artifacts=[
            ArtifactView(
                path=a.path, size=a.size, modified_at=datetime.fromtimestamp(a.modified_at, UTC)
            )
            for a in page.artifacts
        ],
        skipped=[SkippedArtifact(path=e.path, reason=e.reason) for e in page.skipped],
        skipped_omitted=page.skipped_omitted,
    )


FILE_CSP = "sandbox; default-src 'none'; frame-ancestors 'none'"
SETTLED_S = 1.0  # a file written this long ago has a date that names one version of it


class ArtifactFileResponse(FileResponse):
    """Serves an artifact we already opened (through its /proc fd link, so not whatever the
    path names now) and closes that descriptor however the response ends: Starlette's own
    early answers to a bad Range never run background tasks, which leaked one per request."""

    def __init__(self, opened: OpenArtifact, filename: str, *, immutable: bool = False) -> None:
        super().__init__(
            f"/proc/self/fd/{opened.fd}",
            stat_result=opened.stat,
            media_type=opened.media_type,
            filename=download_name(filename),
            content_disposition_type="attachment",
            # a program's (or a client's) file: if a browser shows it after all, it runs no
            # script and reaches nothing of this origin
            headers={"Content-Security-Policy": FILE_CSP},
        )
        self.fd = opened.fd
        # Last-Modified has whole seconds: a file written in the second now under way may be
        # written again within it, and its date would name both versions (RFC 9110 8.8.2.2:
        # then no strong validator). Such a date is not given out, so an If-Range or an
        # If-Modified-Since that names one was read at least a second after the write. An
        # upload's bytes never change (their hash is its id): its date is always one version
        self.settled = immutable or time.time() - opened.stat.st_mtime >= SETTLED_S
        if not self.settled:
            del self.headers["last-modified"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            served = self._as_served(scope)
            if isinstance(served, Response):
                await served(scope, receive, send)
                return
            await super().__call__(served, receive, send)
        except FileShrankError as exc:
            await self._cut_short(scope, receive, exc)
        finally:
            os.close(self.fd)

    async def _cut_short(self, scope: Scope, receive: Receive, exc: FileShrankError) -> None:
        """A file cut back while it is sent (its program's doing, a bad day, not a bug): less
        than the Content-Length announced is left, so the connection is cut, as a client gone
        mid-download ends it, in one line of the log. It ended the answer short, which uvicorn
        and Starlette raised on: an `unhandled_error` with its traceback at every download."""
        log.warning("artifact_shrank", **scope.get("path_params", {}), ended_at=exc.at,
                    announced=self.stat_result.st_size if self.stat_result else None)  # fmt: skip
        if not await cut(scope, receive):
            raise exc

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        """Starlette's own reading (int() of each position) taken `1_0` for 10 and `+1` for 1:
        every Range is read by the strict one, for a refusal (_range_refusal) and the answer."""
        return parse_byte_ranges(http_range, file_size)

    async def _handle_simple(self, send: Send, send_header_only: bool, send_pathsend: bool) -> None:
        """The size announced and no more: a file its program still writes grows while it is
        sent, and Starlette read on to the end, past Content-Length, which made uvicorn cut
        every such download short (a 206's range already stops at its end)."""
        if send_header_only or send_pathsend or self.stat_result is None:
            await super()._handle_simple(send, send_header_only, send_pathsend)
            return
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})  # fmt: skip
        left = self.stat_result.st_size
        async with self._open_file() as file:
            while True:
                chunk = await file.read(min(self.chunk_size, left))
                left -= len(chunk)
                more = bool(chunk) and left > 0
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
                if not more:
                    return

    @contextlib.asynccontextmanager
    async def _open_file(self) -> AsyncIterator[Any]:
        """The descriptor already held, read where asked (pread): Starlette opened the path
        anew, `/proc/self/fd/N`, after the status was sent. Out of descriptors, that open
        failed then: a 200 cut short, and two descriptors per download where one will do."""
        yield _HeldFile(self.fd)

    def _as_served(self, scope: Scope) -> Scope | Response:
        """The conditions on the version (preconditions.py), then Range and If-Range, read
        once, here, for a refusal and for the answer alike: what
        Starlette is handed holds the one Range to serve, or none, and no If-Range. It read
        them again its own way (the first of several Range lines where the refusal read the
        last; If-Range only after the refusal), so a request could be refused for a Range
        the answer would have ignored, or answered in plain text."""
        headers = scope.get("headers", [])
        if self.stat_result is None:
            return scope
        # the version asked about first (RFC 9110 13.2.2): a 304 or 412 before any Range
        failed = precondition_failed(
            headers, scope["method"], self.headers["etag"], self.stat_result.st_mtime,
            settled=self.settled,
        )  # fmt: skip
        if failed is not None:
            return failed
        ranges = [v for k, v in headers if k == b"range"]
        if not ranges:
            return scope
        rest = [(k, v) for k, v in headers if k not in (b"range", b"if-range")]
        if self._range_applies([v for k, v in headers if k == b"if-range"]):
            refusal = _range_refusal(ranges, self.stat_result.st_size)
            if refusal is not None:
                return refusal
            if _in_bytes(ranges[0]):
                rest.append((b"range", ranges[0]))
        return {**scope, "headers": rest}

    def _range_applies(self, conditions: list[bytes]) -> bool:
        """If-Range (RFC 9110 13.1.5): with none, the Range applies; with one, only if it names
        this file as it is now (its strong ETag, or its Last-Modified when it has one: not
        while its second is under way). Else the client holds part of another version: the
        Range is ignored whatever it says, malformed or past the end, and the whole file sent
        (200). Several If-Range lines name no one validator: a condition that cannot be true."""
        if not conditions:
            return True
        if len(conditions) != 1:
            return False
        named = conditions[0].decode("latin-1")
        return not named.startswith("W/") and named in (
            self.headers["etag"],
            self.headers.get("last-modified"),
        )


def _in_bytes(header: bytes) -> bool:
    """A Range in another unit is ignored, the whole file served, as RFC 9110 (14.2) requires
    of a server that does not know the unit (Starlette refused it with 400)."""
    return header.split(b"=", 1)[0].strip(b" \t").lower() == b"bytes"


def _range_refusal(ranges: list[bytes], size: int) -> Response | None:
    """The Range lines of a request as problem JSON if they are refused, else None."""
    if len(ranges) > 1:  # not a list field (RFC 9110 5.3): two lines make no one set
        return _range_problem(
            400, "Bad Range", f"given {len(ranges)} times: one Range header asks for every "
            "range (bytes=0-99,200-299)", "bad-range",
        )  # fmt: skip
    if not _in_bytes(ranges[0]):
        return None
    try:
        parse_byte_ranges(ranges[0].decode("latin-1"), size)
    except MalformedRangeHeader as exc:
        return _range_problem(400, "Bad Range", str(exc.content), "bad-range")
    except RangeNotSatisfiable:
        return _range_problem(
            416, "Range not satisfiable", f"no range starts before the file's end: it has "
            f"{size} bytes", "range-not-satisfiable", {"Content-Range": f"bytes */{size}"},
        )  # fmt: skip
    return None


def _range_problem(
    status: int, title: str, detail: str, slug: str, headers: dict[str, str] | None = None
) -> Response:
    """A Range refused as problem JSON naming the header (Starlette answered plain text)."""
    return problem(
        status, title, f"Range header: {detail}", slug, headers, field="header.Range",
        errors=[{"field": "header.Range", "message": detail}],
    )  # fmt: skip


def download_name(name: str) -> str:
    """The name a browser's save dialog offers (Content-Disposition): no control or format
    character, Unicode's category C. A bidi override (U+202E) before `txt.exe` shows it as
    `exe.txt`, and zero-width ones hide what a name holds; upload names are stored without
    them (services/uploads/names.py). Only the suggestion: a listing keeps the true name."""
    kept = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    return kept or "download"


class FileShrankError(RuntimeError):
    """The file ended at `at`, short of the bytes its answer owes: it got shorter."""

    def __init__(self, at: int) -> None:
        super().__init__(f"the file ended at byte {at}, short of the size announced")
        self.at = at


class _HeldFile:
    """What Starlette's FileResponse reads a file through (seek, read), over a descriptor
    the response holds: each read a pread in a worker thread, at the position it keeps.
    Every read asks for bytes the answer owes, so one that gives fewer (a regular file reads
    short only at its end) is the file cut back under it: FileShrankError, never a short
    chunk that Starlette sends as the answer's last."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.position = 0

    async def seek(self, offset: int) -> None:
        self.position = offset

    async def read(self, size: int) -> bytes:
        chunk = await asyncio.to_thread(os.pread, self.fd, size, self.position)
        self.position += len(chunk)
        if len(chunk) < size:
            raise FileShrankError(self.position)
        return chunk


async def open_off_loop(opener: Callable[[], OpenArtifact]) -> OpenArtifact:
    """Open off the event loop; a request cancelled meanwhile still closes what was opened."""
    task = asyncio.ensure_future(asyncio.to_thread(opener))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:

        def close(done: asyncio.Future[OpenArtifact]) -> None:
            if not done.cancelled() and done.exception() is None:
                os.close(done.result().fd)

        task.add_done_callback(close)
        raise


# The headers a download reads (ArtifactFileResponse), declared for every route serving one.
# Range has no pattern: what the server ignores (another unit) and what it refuses (a LAST
# before its FIRST; 416, a set past the end of this file) are no regular language of the
# header alone, and a pattern had schemathesis take an ignored Range for one to refuse.
# The conditions on the version (If-Match, If-None-Match, If-Modified-Since,
# If-Unmodified-Since: preconditions.py) are HTTP's own, listed in docs/api.md and answered
# 304 or 412 below; as parameters they are values no schema can tell right from wrong (any
# ETag but the file's is a 412), which schemathesis sends as valid and finds refused.
RANGE_HEADERS: dict[str, Any] = {
    "parameters": [
        {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"},
         "description": "byte ranges (RFC 9110): bytes= then FIRST-LAST, FIRST- or -SUFFIX "
            "in ASCII digits, comma-separated, in one Range header. Malformed or given twice: "
            "400 bad-range; no part starting before the file's end: 416; a part past it is "
            "dropped; another unit than bytes is ignored"},
        {"name": "If-Range", "in": "header", "required": False, "schema": {"type": "string"},
         "description": "the ETag or Last-Modified of the version the client holds part of: "
            "if the file is not that version now, the Range is ignored and the whole file "
            "sent (200)"},
    ]
}  # fmt: skip


def download_responses(media_type: str) -> dict[int | str, dict[str, Any]]:
    """A download's answers as it gives them: the whole file, the ranges asked for (one as
    it is, several as multipart/byteranges), a condition on its version that decides
    (304, 412: preconditions.py) and a Range none of whose parts it can serve."""
    refused = problem_responses(416)[416]
    size = {"description": "bytes */SIZE: the file's size", "schema": {"type": "string"}}
    return {
        200: {"description": "the whole file", "content": {media_type: {}}},
        206: {
            "description": "the ranges asked for: one range as its bytes (Content-Range), "
            "several as multipart/byteranges, each part with its Content-Range",
            "headers": {"Content-Range": {"description": "bytes FIRST-LAST/SIZE, for one range",
                                          "schema": {"type": "string"}}},
            "content": {media_type: {}, "multipart/byteranges": {}},
        },
        304: {"description": "the version the client holds is the file's (If-None-Match, "
              "If-Modified-Since): no body", "headers": {"ETag": {"schema": {"type": "string"}}}},
        **problem_responses(412),
        416: {**refused, "headers": {"Content-Range": size}},
    }  # fmt: skip


# Its type is the name's (text/plain for `.txt`), application/octet-stream when unknown
ARTIFACT_DOWNLOAD: dict[str, Any] = {
    "response_class": FileResponse, "openapi_extra": RANGE_HEADERS,
    # out of descriptors or memory as it opens the file (out-of-resources), or an I/O error
    "responses": {**download_responses("*/*"), **problem_responses(503)},
}  # fmt: skip


@router.head("/{path:path}", operation_id="head_artifact", **ARTIFACT_DOWNLOAD)
@router.get("/{path:path}", **ARTIFACT_DOWNLOAD)
async def download_artifact(
    run_id: str,
    path: Annotated[str, FastAPIPath(max_length=MAX_LISTED_PATH)],
    request: Request,
    runs: RunsDep,
    workspace_of: WorkspaceDep,
) -> FileResponse:
    raw = request.scope.get("raw_path") or b""
    tail = raw.split(b"/artifacts/", 1)[-1]
    if _ENCODED_TRICK.search(tail):
        raise ForbiddenPathError(
            "encoded separators and dots are refused in artifact paths", field="path"
        )
    run = await runs.get(run_id)
    workspace = workspace_of(run_id)
    patterns = run.spec.get("artifacts", [])
    opened = await open_off_loop(lambda: open_artifact(workspace, path, patterns))
    return ArtifactFileResponse(opened, filename=path.rsplit("/", 1)[-1])
