"""A run's server-sent events for the Python client: reconnected with Last-Event-ID after a
dropped connection, with backoff, and given up on after `retries` reconnects that brought
nothing; a stream silent for a minute is taken as gone (the server's heartbeat is 15 s)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from runyard.client_guards import ClientError

if TYPE_CHECKING:
    import httpx
    from httpx_sse import ServerSentEvent

SSE_SILENCE_S = 60.0  # four of the server's 15 s heartbeats missed: the stream is gone
# a line of the server's is one event's field: a log chunk of at most 64 KiB, base64'd
MAX_SSE_LINE = 8 * 2**20


def line_capped(stream: Any) -> Any:
    """The response's byte stream, refusing a line longer than MAX_SSE_LINE as it comes
    (httpx_sse gathers a line whole: one without an end took the caller's memory)."""
    import httpx

    class LineCapped(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            since = 0  # bytes since the last line break
            for chunk in stream:
                cut = chunk.rfind(b"\n")
                since = len(chunk) - cut - 1 if cut >= 0 else since + len(chunk)
                if since > MAX_SSE_LINE:
                    raise ClientError(
                        f"the server sent a stream line of over {MAX_SSE_LINE // 2**20} MiB"
                    )
                yield chunk

        def close(self) -> None:
            stream.close()

    return LineCapped()


def sse_events(
    http: httpx.Client, check: Callable[[httpx.Response], httpx.Response], url: str,
    params: dict[str, Any], last_id: str, retries: int,
) -> Iterator[ServerSentEvent]:  # fmt: skip
    """Server-sent events, reconnecting with Last-Event-ID after a dropped connection."""
    import httpx
    from httpx_sse import SSEError, connect_sse

    failures = 0
    while True:
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
                source.response.stream = line_capped(source.response.stream)
                for sse in source.iter_sse():
                    failures = 0
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
        failures += 1
        if failures > retries:
            raise problem
        time.sleep(min(0.2 * 2**failures, 5.0))  # reconnect backoff, client side
