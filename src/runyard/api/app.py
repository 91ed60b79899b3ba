"""The app factory: `create_app(settings)` builds the whole server; no module-level state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from runyard import __version__
from runyard.api import dashboard, docs, fast_submit, inputs, openai_errors, problems, proxy
from runyard.api.middleware.authenticate import AuthenticateMiddleware
from runyard.api.middleware.body_limit import BodyLimitMiddleware, BodyWaits
from runyard.api.middleware.change_conditions import ChangeConditions
from runyard.api.middleware.cross_site import CrossSiteGuard, is_local
from runyard.api.middleware.head_as_get import HeadAsGet
from runyard.api.middleware.request_cap import RequestCap, default_max_requests
from runyard.api.middleware.request_context import RequestContextMiddleware
from runyard.api.middleware.submit_lane import SubmitLane
from runyard.api.query_once import one_value_each
from runyard.api.routes import (
    artifacts,
    batches,
    feed,
    health,
    jobs,
    me,
    metrics,
    openai,
    runs,
    schedules,
    status,
    streams,
    uploads,
)
from runyard.api.security import websocket_token
from runyard.auth import RelaySigner
from runyard.config import Settings
from runyard.runtime import Runtime
from runyard.services.artifact_listing import ListingPool
from runyard.services.chat import AskedBack, Callers


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    rt = runtime or Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await rt.start()
        try:
            yield
        finally:
            await rt.stop()
            app.state.artifact_pool.close()

    app = FastAPI(
        title="runyard",
        version=__version__,
        description="Command-line programs as a robust HTTP service.",
        lifespan=lifespan,
        # a WebSocket's token first (an HTTP request's is checked before routing), then a
        # one-value query parameter given twice: 422
        dependencies=[Depends(websocket_token), Depends(one_value_each)],
        docs_url=None,  # served by api/docs.py from the package, not from a CDN
        redoc_url=None,
        # runyard's own metrics and logs observe every request (request_context.py); FastAPI's
        # OpenTelemetry hooks would ask the providers per request for nothing
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = rt
    app.state.artifact_pool = ListingPool(settings.artifact_threads)
    app.state.chat_asked_back = AskedBack()  # chat streams that told their caller to ask again
    app.state.chat_callers = Callers()  # the chat calls waiting on each run
    problems.install(app)
    signer = RelaySigner(rt.settings.cluster_secret, rt.settings.server_id)
    proxy.install(app, signer)
    routes = (jobs, runs, streams, feed, artifacts, batches, schedules, uploads, health, metrics,
              status, me, openai)  # fmt: skip
    for module in routes:
        app.include_router(module.router)
    submit_route = fast_submit.install(app)  # after the declared route, in front of it
    dashboard.mount(app)
    docs.mount(app)
    inputs.publish(app, settings)
    app.add_middleware(HeadAsGet)  # innermost: the router's neighbour, as GET's answer goes
    app.add_middleware(ChangeConditions)  # once the route is known, before a body is read
    app.add_middleware(inputs.ControlCharacterGuard)  # before any route reads a path or query
    bodies = BodyWaits()  # at shutdown, a body still awaited is not waited for
    rt.at_shutdown.append(bodies.close)
    # innermost first: the body cap, then authentication (both before any body is read)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_kb * 1024,
        idle_s=settings.header_timeout_s, waits=bodies,
    )  # fmt: skip
    app.add_middleware(AuthenticateMiddleware, auth=rt.auth, signer=signer)
    app.add_middleware(openai_errors.OpenAIShape)  # what those answer, on the OpenAI routes
    app.add_middleware(RequestContextMiddleware, metrics=rt.metrics)
    app.add_middleware(
        SubmitLane, runtime=rt, route=submit_route, handlers=app.exception_handlers,
        max_bytes=settings.max_body_kb * 1024, idle_s=settings.header_timeout_s, waits=bodies,
    )  # fmt: skip
    # while no token is required, pages a browser shows change nothing (cross_site.py)
    bound = settings.host.lower().strip("[]")
    app.add_middleware(CrossSiteGuard, auth=rt.auth, bound=bound if is_local(bound) else None)
    # outermost: a request past the cap holds nothing, not even a request id
    app.add_middleware(
        RequestCap, max_requests=settings.max_requests or default_max_requests(),
        refused=rt.metrics.requests_refused,
    )  # fmt: skip
    return app
