"""A run's server-sent events for the Python client: reconnected with Last-Event-ID after a
dropped connection, with backoff, and given up on after `retries` reconnects in a row that
brought nothing new and held briefly; a stream silent for a minute is taken as gone (the
server's heartbeat is 15 s). What one event may hold is bounded in client_sse."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from runyard.client_guards import ClientError
from runyard.client_sse import MAX_SSE_EVENT, MAX_SSE_LINE, response_events

if TYPE_CHECKING:
    import httpx
    from httpx_sse import ServerSentEvent

__all__ = ["MAX_SSE_EVENT", "MAX_SSE_LINE", "SSE_SILENCE_S", "sse_events"]

SSE_SILENCE_S = 60.0  # four of the server's 15 s heartbeats missed: the stream is gone
# a stream answered and held this long before it dropped (not timed out) counts as one that
# moved on: a quiet run's stream, cut now and then on the way (a gateway's cap on a request's
# time, 29 s for some), is followed as long as it runs; a server can hold the client this
# way, but not make it ask again and again. A host that never answers, or a stream silent
# past its timeout, earns nothing: it is given up after `retries`.
HELD_S = 10.0
# events without an id remembered (as hashes) to tell a new one from one sent again: the
# server's are a few control events a stream, so this bounds only a server that is not one
SEEN_KEPT = 4096
CONTROL = ("attempt", "end", "lagged", "shutdown")  # a stream's events that carry no id


def sse_events(
    http: httpx.Client, check: Callable[[httpx.Response], httpx.Response], url: str,
    params: dict[str, Any], last_id: str, retries: int,
) -> Iterator[ServerSentEvent]:  # fmt: skip
    """Server-sent events, reconnecting with Last-Event-ID after a dropped connection."""
    import httpx
    from httpx_sse import SSEError, connect_sse

    news = _News(last_id)
    # connections in a row that ended without bringing anything new: only news resets it, not
    # any event (a server that sends the same event and hangs up was asked again for ever)
    failures = 0
    while True:
        moved, answered, began = False, False, time.monotonic()
        try:
            with connect_sse(
                http, "GET", url, params=params,
                headers={"Last-Event-ID": last_id} if last_id else {},  # none: from `params`
                # the server sends a heartbeat every 15 s: a stream silent for a minute
                # is gone, whatever its socket says
                timeout=httpx.Timeout(30.0, read=SSE_SILENCE_S),
            ) as source:  # fmt: skip
                if not 200 <= source.response.status_code < 300:
                    source.response.read()
                    check(source.response)
                answered = True
                for sse in response_events(source.response):
                    fresh = news.new(sse)
                    moved = moved or fresh
                    if not fresh and sse.event not in CONTROL and _rank(sse.id) is not None:
                        # sent again by a server that ignored Last-Event-ID: neither handed
                        # over twice nor a step back for the next reconnect (a control event
                        # carries the last id on, as SSE keeps it: it is passed on)
                        continue
                    if sse.id:
                        last_id = sse.id
                    yield sse
                    if sse.event in ("end", "lagged", "shutdown"):
                        return
            # ended without saying why (a proxy that cuts long answers): reconnected, but
            # as a failure, with backoff, or a stream that always ends so was asked for
            # again thousands of times a second, for ever
            problem: Exception = ClientError("the stream ended without its end event")
        except (httpx.TransportError, SSEError) as exc:
            problem = exc
        held = answered and not isinstance(problem, httpx.TimeoutException)
        moved = moved or (held and time.monotonic() - began >= HELD_S)
        failures = 1 if moved else failures + 1
        if failures > retries:
            if isinstance(problem, ClientError) and retries:
                raise ClientError(f"{problem}; {retries} reconnects brought nothing new")
            raise problem
        time.sleep(min(0.2 * 2**failures, 5.0))  # reconnect backoff, client side


class _News:
    """Whether an event moves the stream on: one with an id beyond the last seen (a server
    that ignores Last-Event-ID sends old ones again), one without an id that was not seen."""

    def __init__(self, last_id: str) -> None:
        self.last = _rank(last_id)
        self.seen: dict[int, None] = {}  # insertion-ordered: the oldest is dropped first

    def new(self, sse: ServerSentEvent) -> bool:
        rank = _rank(sse.id)
        if rank is not None:
            if self.last is not None and rank <= self.last:
                return False
            self.last = rank
            return True
        key = hash((sse.id, sse.event, sse.data))
        if key in self.seen:
            return False
        self.seen[key] = None
        if len(self.seen) > SEEN_KEPT:
            del self.seen[next(iter(self.seen))]
        return True


def _rank(event_id: str) -> tuple[int, tuple[int, ...]] | None:
    """The server's ids in order (a run event's SEQ; a log's OFFSET in attempt 1, then
    ATTEMPT:OFFSET, so more parts are later); None for any other id."""
    parts = event_id.split(":") if 0 < len(event_id) <= 64 else [""]
    if not all(p.isascii() and p.isdigit() for p in parts):
        return None
    return len(parts), tuple(int(p) for p in parts)
