"""Artifact routes: list a run's declared outputs and download one (Range supported)."""

from __future__ import annotations

import asyncio
import os
import re
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from runyard.api.deps import RuntimeDep
from runyard.api.proxy import ON_OWNER
from runyard.api.security import READ
from runyard.errors import ForbiddenPathError
from runyard.schemas import ArtifactList, ArtifactView, problem_responses
from runyard.services.artifacts import list_artifacts, open_artifact, workspace_usage

router = APIRouter(
    prefix="/v1/runs/{run_id}/artifacts",
    tags=["artifacts"],
    dependencies=[READ, ON_OWNER],  # the files are where the run ran
    responses=problem_responses(401, 403, 404, 416, 422),
)

# Percent-encoded '/', '\', NUL or '.': a client hiding a separator or a dot-segment.
_ENCODED_TRICK = re.compile(rb"%(2f|5c|00|2e)", re.IGNORECASE)


@router.get("", response_model=ArtifactList)
async def get_artifacts(run_id: str, rt: RuntimeDep) -> ArtifactList:
    run = await rt.runs.get(run_id)
    workspace = rt.executor.paths(run_id).workspace
    found, used = await asyncio.to_thread(
        lambda: (
            list_artifacts(workspace, run.spec.get("artifacts", [])),
            workspace_usage(workspace),
        )
    )
    return ArtifactList(
        workspace_bytes=used,
        artifacts=[
            ArtifactView(
                path=a.path, size=a.size, modified_at=datetime.fromtimestamp(a.modified_at, UTC)
            )
            for a in found
        ],
    )


@router.get(
    "/{path:path}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_artifact(
    run_id: str, path: str, request: Request, rt: RuntimeDep
) -> FileResponse:
    raw = request.scope.get("raw_path") or b""
    tail = raw.split(b"/artifacts/", 1)[-1]
    if _ENCODED_TRICK.search(tail):
        raise ForbiddenPathError(
            "encoded separators and dots are refused in artifact paths", field="path"
        )
    run = await rt.runs.get(run_id)
    workspace = rt.executor.paths(run_id).workspace
    opened = await asyncio.to_thread(open_artifact, workspace, path, run.spec.get("artifacts", []))
    # Serve the file we opened (through its /proc fd link), not whatever the path names now.
    return FileResponse(
        f"/proc/self/fd/{opened.fd}",
        stat_result=opened.stat,
        media_type=opened.media_type,
        filename=path.rsplit("/", 1)[-1],
        content_disposition_type="attachment",
        background=BackgroundTask(os.close, opened.fd),
    )
