"""GET /v1/events: one SSE stream of changes across all runs (states, submissions, progress)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter
from sse_starlette import EventSourceResponse, ServerSentEvent

from runyard.api.deps import FeedDep, HubDep, SettingsDep
from runyard.api.security import READ
from runyard.api.sse import sse_response
from runyard.schemas import problem_responses
from runyard.streams.feed import FeedItem
from runyard.streams.subscriber import Closed, Lagged

router = APIRouter(tags=["streams"], responses=problem_responses(401, 403))


@router.get("/v1/events", response_class=EventSourceResponse, dependencies=[READ])
async def stream_feed(hub: HubDep, feed: FeedDep, settings: SettingsDep) -> EventSourceResponse:
    """Not resumable: it notifies, and a watcher that lagged or reconnects re-reads
    `GET /v1/runs`, the truth. Per-run history is `GET /v1/runs/{id}/events`."""

    async def events() -> AsyncIterator[ServerSentEvent]:
        # subscribed only once the stream runs: a client gone before it starts holds nothing
        sub = await hub.subscribe_feed()
        try:
            yield ServerSentEvent(data="{}", event="ready")  # from here on nothing is missed
            async for item in feed.follow(sub):
                yield _feed_event(item)
        finally:
            hub.unsubscribe_feed(sub)

    return sse_response(settings, hub, events(), lambda _: _feed_event(Lagged(0)))


def _feed_event(item: FeedItem | Lagged | Closed) -> ServerSentEvent:
    if isinstance(item, FeedItem):
        return ServerSentEvent(data=json.dumps(item.data, default=str), event=item.kind)
    if isinstance(item, Lagged):
        return ServerSentEvent(data='{"detail": "fell behind; re-read the list"}', event="lagged")
    return ServerSentEvent(
        data='{"detail": "the server is shutting down; reconnect and re-read the list"}',
        event="shutdown",
    )
