"""The feed: one stream of what changes across all runs, for overviews (the dashboard's runs
table, a terminal monitor) that would otherwise poll or open a stream per run.

It carries notifications, not history: a watcher that falls behind is dropped with `lagged`
and re-reads the list, which is the truth; the per-run event streams stay the resumable,
sequence-numbered record.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sse_starlette import ServerSentEvent

from runyard.streams.subscriber import Closed, Lagged, Subscriber

# A watcher is sent what gathered for it at most this often, in one piece. Sent item by item,
# each change cost every watcher a pass through its response and a write (about 20 us): with
# a change every few milliseconds, most of the server's time went to the feed's watchers.
GATHER_S = 0.05


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One change as every watcher is sent it, made once however many watch: each watcher's
    share of an offer is an append of this same object. Serialised and framed per watcher
    (JSON, then sse-starlette's encoding), 300 watchers made a 10,000-run batch ten times
    slower and the health check 40 times slower."""

    kind: str  # run (a state change), submitted, batch, progress, deleted
    frame: bytes  # its SSE event: `event: KIND`, then its data as one line of JSON

    @classmethod
    def of(cls, kind: str, data: dict[str, Any]) -> FeedItem:
        # encoded by the SSE library once here, not once per watcher by its response
        return cls(kind, ServerSentEvent(data=json.dumps(data, default=str), event=kind).encode())


class RunFeed:
    def __init__(self, max_buffer_bytes: int) -> None:
        self.max_buffer_bytes = max_buffer_bytes
        self.subscribers: set[Subscriber] = set()
        self.lagged_total = 0
        self.closed = False

    def __bool__(self) -> bool:
        return bool(self.subscribers)

    def offer(self, kind: str, data: dict[str, Any]) -> None:
        if not self.subscribers:
            return
        item = FeedItem.of(kind, data)
        size = len(item.frame)
        dropped = [sub for sub in self.subscribers if not sub.offer(item, size)]
        for sub in dropped:
            self.subscribers.discard(sub)
        self.lagged_total += len(dropped)

    def subscribe(self) -> Subscriber:
        sub = Subscriber(self.max_buffer_bytes)
        if self.closed:
            sub.close(Closed())  # shutting down: told at once, never added
        else:
            self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def resync(self) -> None:
        """What changed may have been missed (the cluster's listener reconnected): every
        watcher is dropped with `lagged`, and re-reads the list, which is the truth."""
        for sub in self.subscribers:
            sub.lag()
        self.lagged_total += len(self.subscribers)
        self.subscribers.clear()

    def close(self) -> None:
        self.closed = True
        for sub in self.subscribers:
            sub.close(Closed())
        self.subscribers.clear()

    async def follow(self, sub: Subscriber) -> AsyncIterator[bytes | Lagged | Closed]:
        """What the watcher is sent, in order: the frames of the items queued for it since
        its last send, joined, at most one send every GATHER_S (the first after a quiet
        spell at once), then Lagged or Closed at its end."""
        try:
            while True:
                frames: list[bytes] = []
                for item in await sub.drain():
                    if isinstance(item, FeedItem):
                        frames.append(item.frame)
                        continue
                    if frames:
                        yield b"".join(frames)
                    yield item
                    return
                if frames:
                    yield b"".join(frames)
                if sub.lagged:
                    yield Lagged(0)
                    return
                await asyncio.sleep(GATHER_S)  # what comes meanwhile waits in its buffer
        finally:
            self.unsubscribe(sub)
