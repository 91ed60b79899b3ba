"""A response's server-sent events, read as the SSE spec reads them (a line ends at CR, LF or
CRLF; an event at a blank line), with what one event may hold bounded as it comes in.

httpx_sse gathers a line whole, and an event's `data:` lines until the blank line that ends
it: a server that never ended one (64 KiB lines, no blank line) took the caller's memory
without limit. A cap on the bytes since the last LF alone missed both that and a stream of
valid CR-only lines, refused after 8 MiB. The caps are on the bytes once decoded: a gzipped
line of 8 KiB is 8 MiB once read."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from runyard.client_guards import ClientError

if TYPE_CHECKING:  # httpx is imported when a client is made: the CLI starts without it
    import httpx
    from httpx_sse import ServerSentEvent

# a line of the server's is one event's field: a log chunk of at most 64 KiB, base64'd
MAX_SSE_LINE = 8 * 2**20
# an event of the server's is one log chunk: 512 KiB of lines at worst (64 KiB of empty
# lines, each framed as `data: ` and a line end)
MAX_SSE_EVENT = 8 * 2**20
_BOM = b"\xef\xbb\xbf"
_PIECE = 2**16


def response_events(response: httpx.Response) -> Iterator[ServerSentEvent]:
    """The events of a response, refusing (ClientError) a line or an event over its cap."""
    from httpx_sse import SSEError

    kind = response.headers.get("content-type", "").partition(";")[0]
    if "text/event-stream" not in kind:
        raise SSEError(f"the server's stream is {kind[:100]!r}, not text/event-stream")
    return events(response.iter_bytes())


def events(chunks: Iterable[bytes]) -> Iterator[ServerSentEvent]:
    """The events in a stream's bytes, however they are cut into chunks."""
    reader = _Reader()
    for chunk in chunks:
        # a chunk is split into a list of its lines: one of 64 MiB (a gzipped one, decoded)
        # of LFs would be a list of 64 M, so it goes in pieces
        for at in range(0, len(chunk), _PIECE):
            yield from reader.feed(chunk[at : at + _PIECE] if len(chunk) > _PIECE else chunk)
    # an event the stream ended in the middle of is dropped, as the spec says


class _Reader:
    def __init__(self) -> None:
        from httpx_sse import ServerSentEvent

        self.made = ServerSentEvent
        self.pending = bytearray()  # the line so far
        self.after_cr = False  # the last chunk ended with CR: an LF first in this one ends no line
        self.first = True  # a BOM before the first line is no part of it, as the spec says
        self.size = 0  # the event's lines so far, each with its line end
        self.kind = ""
        self.data = bytearray()  # each `data:` value and an LF, as the spec gathers them
        self.last_id = ""  # kept from event to event, as the spec says

    def feed(self, chunk: bytes) -> Iterator[ServerSentEvent]:
        if not chunk:  # nothing: not even the LF a CR before it waits for
            return
        if self.after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self.after_cr = chunk.endswith(b"\r")
        # bytes split at CR, LF and CRLF alone: SSE's line ends
        lines = chunk.splitlines()
        # the last line goes on in the next chunk unless this one ends with a line end
        tail = lines.pop() if lines and not chunk.endswith((b"\r", b"\n")) else b""
        if lines and self.pending:
            lines[0] = bytes(self.pending + lines[0])
            self.pending.clear()
        self.pending += tail
        _cap_line(len(self.pending))
        for line in lines:
            sse = self._line(line)
            if sse is not None:
                yield sse

    def _line(self, line: bytes) -> ServerSentEvent | None:
        _cap_line(len(line))
        if self.first:
            self.first = False
            line = line.removeprefix(_BOM)
        if not line:
            sse = None
            if self.data:  # one without data is no event, only an end to its fields
                text = self.data[:-1].decode("utf-8", "replace")
                sse = self.made(self.kind or "message", text, self.last_id)
            self.size, self.kind = 0, ""
            self.data.clear()
            return sse
        self.size += len(line) + 1
        if self.size > MAX_SSE_EVENT:
            raise ClientError(
                f"the server sent a stream event of over {MAX_SSE_EVENT // 2**20} MiB (its "
                "lines together, before the blank line that ends one)"
            )
        field, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if field == b"data":
            self.data += value
            self.data += b"\n"
        elif field == b"event":
            self.kind = value.decode("utf-8", "replace")
        elif field == b"id" and b"\0" not in value:
            self.last_id = value.decode("utf-8", "replace")
        # else a comment (no field name), `retry` (the client keeps its own backoff), or a
        # field SSE does not know: nothing to keep
        return None


def _cap_line(size: int) -> None:
    if size > MAX_SSE_LINE:
        raise ClientError(f"the server sent a stream line of over {MAX_SSE_LINE // 2**20} MiB")
