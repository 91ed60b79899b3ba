"""Health endpoints: public, cheap, and honest. All three read one immutable snapshot."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from runyard.api.deps import HealthDep

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(health: HealthDep) -> JSONResponse:
    snap = health.current
    body = {
        "status": "ok" if snap.ready else "unavailable",
        "checks": snap.failed_checks,
        "snapshot_at": datetime.fromtimestamp(snap.snapshot_at, UTC).isoformat(),
    }
    return JSONResponse(body, status_code=200 if snap.ready else 503)


@router.get("/health")
async def capacity(health: HealthDep) -> dict[str, Any]:
    snap = health.current
    return {
        "active": snap.active,
        "queued": snap.queued,
        "capacity": snap.capacity,
        "busy": snap.busy,
        "draining": snap.draining,
        "ready": snap.ready,
        "scheduler": snap.scheduler,
        "streams": snap.streams,
        "snapshot_at": datetime.fromtimestamp(snap.snapshot_at, UTC).isoformat(),
    }
