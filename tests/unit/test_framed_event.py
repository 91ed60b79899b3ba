"""A log chunk's event is framed by `bytes.replace` (sse-starlette frames line by line in
Python: a catch-up of a large log to many watchers held the event loop for seconds); its bytes
are exactly sse-starlette's, for any text a log event carries (UTF-8, no CR)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from sse_starlette import ServerSentEvent

from runyard.api.routes.streams import log_event
from runyard.api.sse import FramedEvent
from runyard.streams.subscriber import Chunk

LOG_TEXT = st.text(st.characters(blacklist_characters="\r", blacklist_categories=["Cs"]))


@given(LOG_TEXT)
def test_a_framed_event_is_sse_starlettes_bytes(text: str) -> None:
    theirs = ServerSentEvent(data=text, event="log", id="2:1048576").encode()
    assert FramedEvent(text.encode(), event="log", id="2:1048576").encode() == theirs


@given(st.binary(min_size=1, max_size=300))
def test_a_log_chunk_reads_back_as_its_bytes(data: bytes) -> None:
    """Framed as text when SSE gives back exactly its bytes, else as base64."""
    import base64

    event = log_event(Chunk(0, data), attempt=1)
    lines = event.encode().decode().split("\r\n")
    assert lines[0] == f"id: {len(data)}" and lines[1] in ("event: log", "event: log.b64")
    body = "\n".join(line.removeprefix("data: ") for line in lines[2:-2])
    got = base64.b64decode(body) if lines[1] == "event: log.b64" else body.encode()
    assert got == data
