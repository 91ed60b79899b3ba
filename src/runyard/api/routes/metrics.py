"""GET /metrics: Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from runyard.api.deps import RuntimeDep
from runyard.api.security import check
from runyard.auth import Role

router = APIRouter(tags=["observability"])


@router.get("/metrics", response_class=Response)
async def metrics(rt: RuntimeDep, request: Request) -> Response:
    if not rt.settings.metrics_public:
        check(request.app.state, request.headers.get("authorization"), Role.READ,
              request.scope.setdefault("state", {}))  # fmt: skip
    await rt.refresh_gauges()
    return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)
