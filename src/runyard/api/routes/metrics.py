"""GET /metrics: Prometheus text format."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from runyard.api.deps import AuthDep, GaugesDep, MetricsDep, SettingsDep
from runyard.api.security import authorization, check
from runyard.auth import Role
from runyard.schemas import problem_responses

router = APIRouter(tags=["observability"], responses=problem_responses(403))


@router.get("/metrics", response_class=Response)
async def metrics(
    request: Request, settings: SettingsDep, auth: AuthDep, refresh_gauges: GaugesDep,
    registry: MetricsDep,
) -> Response:  # fmt: skip
    if not settings.metrics_public:
        check(auth, authorization(request.headers, auth), Role.READ,
              request.scope.setdefault("state", {}))  # fmt: skip
    await refresh_gauges()
    # a long text to build: in a thread, not in the loop's turn every other request waits for
    text = await asyncio.to_thread(generate_latest, registry.registry)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
