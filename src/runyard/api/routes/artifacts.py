"""Artifact routes: list a run's declared outputs page by page, and download one (Range
supported)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
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
    responses=problem_responses(401, 403, 404, 416, 422),
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


class ArtifactFileResponse(FileResponse):
    """Serves an artifact we already opened (through its /proc fd link, so not whatever the
    path names now) and closes that descriptor however the response ends: Starlette's own
    early answers to a bad Range never run background tasks, which leaked one per request."""

    def __init__(self, opened: OpenArtifact, filename: str) -> None:
        super().__init__(
            f"/proc/self/fd/{opened.fd}",
            stat_result=opened.stat,
            media_type=opened.media_type,
            filename=filename,
            content_disposition_type="attachment",
            # a program's (or a client's) file: if a browser shows it after all, it runs no
            # script and reaches nothing of this origin
            headers={"Content-Security-Policy": FILE_CSP},
        )
        self.fd = opened.fd

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            scope = _without_foreign_range(scope)
            refusal = self._range_refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            await super().__call__(scope, receive, send)
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
        every Range is read by the strict one, for the refusal below and for the answer."""
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

    def _range_refusal(self, scope: Scope) -> Response | None:
        """A bad Range as problem JSON naming the header (Starlette answers plain text)."""
        header = dict(scope.get("headers", [])).get(b"range")
        if header is None or self.stat_result is None:
            return None
        try:
            self._parse_range_header(header.decode("latin-1"), self.stat_result.st_size)
        except MalformedRangeHeader as exc:
            return problem(400, "Bad Range", f"Range header: {exc.content}", "bad-range")
        except RangeNotSatisfiable as exc:
            return problem(
                416, "Range not satisfiable", f"Range header: the artifact has {exc.max_size} "
                "bytes", "range-not-satisfiable", {"Content-Range": f"bytes */{exc.max_size}"},
            )  # fmt: skip
        return None


def _without_foreign_range(scope: Scope) -> Scope:
    """A Range in a unit other than bytes is ignored, the whole artifact served, as RFC 9110
    (14.2) requires of a server that does not know the unit (Starlette refused it with 400)."""
    headers = scope.get("headers", [])
    ranges = [v for k, v in headers if k == b"range"]
    if not ranges or all(v.split(b"=", 1)[0].strip().lower() == b"bytes" for v in ranges):
        return scope
    return {**scope, "headers": [(k, v) for k, v in headers if k != b"range"]}


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


@router.head("/{path:path}", response_class=FileResponse, operation_id="head_artifact")
@router.get(
    "/{path:path}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
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
