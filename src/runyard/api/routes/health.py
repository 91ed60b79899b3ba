"""Health endpoints: public, cheap, and honest. All three read one immutable snapshot (and
/health the stream counters as they are, which cost nothing to read)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from runyard.api.deps import AuthDep, HealthDep
from runyard.api.security import authorization, check
from runyard.auth import Role
from runyard.errors import RunyardError
from runyard.schemas import problem_responses

router = APIRouter(tags=["health"], responses=problem_responses(403))  # a browser's Host


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


def _scheduler_seen_by(
    request: Request, auth: AuthDep, scheduler: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Each schedule (its id, job, last run) only for a caller who may read schedules: the
    rest of /health is public (load balancers, probes), GET /v1/schedules is not."""
    if scheduler is None:
        return None
    try:
        check(auth, authorization(request.headers, auth), Role.READ, {})
    except RunyardError:
        return {k: v for k, v in scheduler.items() if k != "schedules"}
    return scheduler


@router.get("/health")
async def capacity(request: Request, health: HealthDep, auth: AuthDep) -> dict[str, Any]:
    snap = health.current
    return {
        "active": snap.active,
        "queued": snap.queued,
        "capacity": snap.capacity,
        "busy": snap.busy,
        "draining": snap.draining,
        "ready": snap.ready,
        "scheduler": _scheduler_seen_by(request, auth, snap.scheduler),
        "streams": health.streams(),
        "snapshot_at": datetime.fromtimestamp(snap.snapshot_at, UTC).isoformat(),
    }
