"""GET /v1/events: one SSE stream of changes across all runs (states, submissions, progress)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter
from sse_starlette import EventSourceResponse, ServerSentEvent

from runyard.api.deps import FeedDep, HubDep, SettingsDep
from runyard.api.security import READ
from runyard.api.sse import sse_response
from runyard.schemas import problem_responses
from runyard.streams.subscriber import Closed, Lagged

router = APIRouter(tags=["streams"], responses=problem_responses(401, 403))

READY = ServerSentEvent(data="{}", event="ready")
LAGGED = ServerSentEvent(data='{"detail": "fell behind; re-read the list"}', event="lagged")
SHUTDOWN = ServerSentEvent(
    data='{"detail": "the server is shutting down; reconnect and re-read the list"}',
    event="shutdown",
)


class _Framed(ServerSentEvent):
    """Feed items as the feed framed them, once for all its watchers (streams/feed.py): sent
    as they are, in one write."""

    def __init__(self, frames: bytes) -> None:
        super().__init__()  # no id (the feed is not resumable), no name: not a `lagged`
        self._frames = frames

    def encode(self) -> bytes:
        return self._frames


@router.get("/v1/events", response_class=EventSourceResponse, dependencies=[READ])
async def stream_feed(hub: HubDep, feed: FeedDep, settings: SettingsDep) -> EventSourceResponse:
    """Not resumable: it notifies, and a watcher that lagged or reconnects re-reads
    `GET /v1/runs`, the truth. Per-run history is `GET /v1/runs/{id}/events`."""

    async def events() -> AsyncIterator[ServerSentEvent]:
        # subscribed only once the stream runs: a client gone before it starts holds nothing
        sub = await hub.subscribe_feed()
        try:
            yield READY  # from here on nothing is missed
            async for sent in feed.follow(sub):
                if isinstance(sent, bytes):
                    yield _Framed(sent)
                else:
                    yield _control(sent)
        finally:
            hub.unsubscribe_feed(sub)

    return sse_response(settings, hub, events(), lambda _: LAGGED)


def _control(item: Lagged | Closed) -> ServerSentEvent:
    return LAGGED if isinstance(item, Lagged) else SHUTDOWN
