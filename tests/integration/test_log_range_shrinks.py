"""A log range whose file gets shorter while it is sent (its program cut its log back): the
answer, shorter than its Content-Length now, is cut off, not ended as if whole and not an
unhandled error (a probe: "Response content shorter than Content-Length")."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from runyard.api.client_gone import ABORT_EXTENSION
from runyard.api.log_response import LogRangeResponse, ShortLogError
from runyard.services.log_ranges import PIECE, open_range

SIZE = 4 * PIECE


def _sending(log: Path, sent: list[dict[str, Any]]) -> Any:
    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and len(sent) == 2:
            os.truncate(log, 0)  # cut back once the first piece went

    return send


async def _gone() -> dict[str, Any]:
    return {"type": "http.disconnect"}


def test_a_log_cut_back_while_it_is_sent_cuts_the_connection(tmp_path: Path) -> None:
    log = tmp_path / "attempt-1.log"
    log.write_bytes(b"x" * SIZE)
    sent: list[dict[str, Any]] = []
    aborted: list[bool] = []
    scope = {"type": "http", "method": "GET", "path": "/v1/runs/r/logs",
             "extensions": {ABORT_EXTENSION: {"abort": lambda: aborted.append(True)}}}  # fmt: skip
    response = LogRangeResponse(open_range(log, 0, SIZE), "text/plain")
    asyncio.run(response(scope, _gone, _sending(log, sent)))
    assert aborted == [True]
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert [len(m["body"]) for m in bodies] == [PIECE]  # and no last, empty, "whole" one
    assert all(m["more_body"] for m in bodies)


def test_without_a_way_to_cut_it_the_answer_fails_saying_why(tmp_path: Path) -> None:
    log = tmp_path / "attempt-1.log"
    log.write_bytes(b"x" * SIZE)
    response = LogRangeResponse(open_range(log, 0, SIZE), "text/plain")
    scope = {"type": "http", "method": "GET", "path": "/v1/runs/r/logs"}
    with pytest.raises(ShortLogError, match=f"{PIECE} of {SIZE} bytes"):
        asyncio.run(response(scope, _gone, _sending(log, [])))
