"""Upload routes: a file sent ahead of the runs that use it, streamed to disk, stored once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from starlette.requests import ClientDisconnect

from runyard import upload_refs
from runyard.api.deps import UploadExpiryDep, UploadsDep
from runyard.api.inputs import UploadId, header_int
from runyard.api.json_body import as_it_is
from runyard.api.problems import client_left
from runyard.api.routes.artifacts import (
    RANGE_HEADERS,
    ArtifactFileResponse,
    download_responses,
    open_off_loop,
)
from runyard.api.security import ADMIN, READ, SUBMIT
from runyard.errors import NotFoundError, RunyardError, raise_if_servers_fault
from runyard.schemas import UploadView, problem_responses
from runyard.services.uploads import Upload, UploadTooLargeError, safe_name

router = APIRouter(
    prefix="/v1/uploads",
    tags=["uploads"],
    responses=problem_responses(400, 401, 403, 404, 413, 422, 503, 507),
)

BODY = {
    "requestBody": {
        "required": False,  # no body is an empty file, which is a file all the same
        "description": (
            "the file's bytes (up to max_upload_mb; chunked is fine), stored as they are "
            "whatever the Content-Type says (curl's --data-binary and -T send others)"
        ),
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
    }
}
Name = Annotated[str, Query(min_length=1, max_length=1024, description="the file's name")]


def upload_view(upload: Upload, named: str | None = None) -> UploadView:
    """`named`: the name this request gave the bytes (made safe), else the stored one (made
    safe again: one stored before names were kept as they are made may not be)."""
    return UploadView(
        id=upload.id, ref=upload_refs.ref(upload.id, named or safe_name(upload.name)),
        size=upload.size,
        name=upload.name, original_name=upload.original_name,
        created_at=datetime.fromtimestamp(upload.created_at, UTC),
    )  # fmt: skip


E = TypeVar("E", bound=RunyardError)


def close_after(error: E) -> E:
    """`error`, to be answered with `Connection: close`: a body refused before it all came
    is not read on. Kept open, uvicorn read the rest to its end and dropped it before the
    connection could serve another request (3 GB in 4 s, its event loop busy meanwhile);
    closed, the reading stops with the answer, as BodyTooLargeError's does for other bodies."""
    error.headers = {**error.headers, "Connection": "close"}
    return error


async def _receive(request: Request, uploads: UploadsDep, name: str) -> JSONResponse:
    as_it_is(request.headers)  # its bytes are the file: stored as sent, never decoded
    announced = header_int(request.headers.get("content-length", ""))
    if announced is not None and announced > uploads.max_bytes:
        try:  # the refusal an upload streamed past the cap gets, `limit_bytes` and all
            uploads.check_room(announced)
        except UploadTooLargeError as exc:
            raise close_after(exc) from None
    try:
        upload, new = await uploads.receive(request.stream(), name, announced or 0)
    except ClientDisconnect:
        raise client_left() from None
    except RunyardError as exc:  # over max_upload_mb, the quota or the disk, as it streamed
        close_after(exc)
        raise
    return JSONResponse(
        upload_view(upload, safe_name(name)).model_dump(mode="json"),
        status_code=201 if new else 200,
    )


# PUT and POST alike (curl -T sends PUT, a form or fetch() POST): one declaration for both
UPLOAD_ROUTE: dict[str, Any] = {
    "status_code": 201, "response_model": UploadView, "dependencies": [SUBMIT],
    "openapi_extra": BODY,
    "responses": {
        200: {"model": UploadView, "description": "the same bytes were already stored"},
        415: {**problem_responses(415)[415], "description": "a Content-Encoding but identity"},
    },
}  # fmt: skip


@router.put("", **UPLOAD_ROUTE)
async def put_upload(request: Request, uploads: UploadsDep, name: Name = "upload") -> JSONResponse:
    return await _receive(request, uploads, name)


@router.post("", **UPLOAD_ROUTE)
async def post_upload(request: Request, uploads: UploadsDep, name: Name = "upload") -> JSONResponse:
    return await _receive(request, uploads, name)


@router.get("/{upload_id}", response_model=UploadView, dependencies=[READ])
async def get_upload(upload_id: UploadId, uploads: UploadsDep) -> UploadView:
    return upload_view(await uploads.get(upload_id))


@router.delete(
    "/{upload_id}", status_code=204, dependencies=[ADMIN], responses=problem_responses(409)
)
async def delete_upload(upload_id: UploadId, expiry: UploadExpiryDep) -> Response:
    """An upload nothing uses any more, removed now rather than upload_ttl_s after its last
    use: 409 while a schedule names it or a stored run uses it."""
    await expiry.delete(upload_id)
    return Response(status_code=204)


# served as an artifact is (ArtifactFileResponse), Range and If-Range alike, always as bytes
CONTENT_ROUTE: dict[str, Any] = {
    "response_class": FileResponse, "dependencies": [READ], "openapi_extra": RANGE_HEADERS,
    "responses": download_responses("application/octet-stream"),
}  # fmt: skip


@router.head("/{upload_id}/content", operation_id="head_upload_content", **CONTENT_ROUTE)
@router.get("/{upload_id}/content", **CONTENT_ROUTE)
async def download_upload(upload_id: UploadId, uploads: UploadsDep) -> FileResponse:
    """The upload's bytes (Range supported), as an attachment under its sanitised name."""
    upload = await uploads.get(upload_id)
    try:
        opened = await open_off_loop(lambda: uploads.open_blob(upload.id))
    except FileNotFoundError:
        raise NotFoundError(f"no upload {upload.id}") from None
    except OSError as exc:  # out of descriptors (503 out-of-resources), not a 500
        raise_if_servers_fault(exc, "the upload")
        raise
    return ArtifactFileResponse(opened, filename=upload.name, immutable=True)
