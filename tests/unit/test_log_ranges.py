"""A log's range is sent piece by piece from the descriptor held (a request held its whole
range, up to 4 MiB: 400 readers that stalled held 2 GB), and called text exactly as the
whole-range rule (`utf8_text_end`) calls it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runyard.api.log_response import LogRangeResponse
from runyard.errors import ConflictError
from runyard.services.log_ranges import PIECE, open_range
from runyard.streams.chunks import utf8_text_end


def sent(response: LogRangeResponse) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    asyncio.run(response(scope={"type": "http"}, receive=receive, send=send))
    return messages


def test_a_large_range_goes_out_in_pieces_and_its_log_is_closed(tmp_path: Path) -> None:
    log = tmp_path / "attempt-1.log"
    data = ("ünïcode line\n" * 300_000).encode()[: 4 * 2**20]
    log.write_bytes(data)
    opened = open_range(log, 100, 4 * 2**20)
    fd = opened.fd
    assert fd is not None
    messages = sent(LogRangeResponse(opened, "text/plain; charset=utf-8"))
    start, *bodies = messages
    headers = dict(start["headers"])
    assert max(len(m["body"]) for m in bodies) <= PIECE  # never the whole range at once
    assert len(bodies) >= len(data) // PIECE - 1
    body = b"".join(m["body"] for m in bodies)
    assert int(headers[b"content-length"]) == len(body)
    assert body == data[100 : 100 + len(body)]
    assert int(headers[b"x-next-offset"]) == 100 + len(body) < len(data)  # cut at a character
    assert body.decode("utf-8")  # whole characters only
    with pytest.raises(OSError):
        os.fstat(fd)  # closed once sent


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=600) | st.text(max_size=200).map(lambda t: t.encode()),
    offset=st.integers(0, 700),
    limit=st.integers(1, 700),
)
def test_the_range_is_called_text_as_the_whole_range_rule_says(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, offset: int, limit: int
) -> None:
    log = tmp_path_factory.mktemp("log") / "attempt-1.log"
    log.write_bytes(data)
    opened = open_range(log, offset, limit)
    opened.close()
    whole = data[min(offset, len(data)) : min(offset, len(data)) + limit]
    end = utf8_text_end(whole)
    assert opened.text == (end is not None)
    assert opened.end - opened.start == (end if end is not None else len(whole))


def test_a_log_not_there_is_an_empty_range_and_one_not_a_file_a_conflict(tmp_path: Path) -> None:
    assert open_range(tmp_path / "none.log", 5, 10).fd is None
    (tmp_path / "dir.log").mkdir()
    with pytest.raises(ConflictError, match="not a plain file"):
        open_range(tmp_path / "dir.log", 5, 10)
