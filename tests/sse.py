"""Test-side SSE watchers (httpx + httpx-sse), reassembling exact bytes from log events."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import aconnect_sse


@dataclass
class Watched:
    data: bytearray = field(default_factory=bytearray)
    last_id: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    lagged: dict[str, Any] | None = None
    arrivals: list[tuple[int, float]] = field(default_factory=list)  # (end offset, monotonic)


async def watch_log(
    client: httpx.AsyncClient,
    url: str,
    *,
    last_id: str | None = None,
    stop_after_bytes: int | None = None,
    into: Watched | None = None,
) -> Watched:
    import time

    got = into or Watched()
    headers = {"Last-Event-ID": last_id} if last_id else {}
    async with aconnect_sse(client, "GET", url, headers=headers) as source:
        async for sse in source.aiter_sse():
            if sse.event == "log":
                got.data += sse.data.encode()
            elif sse.event == "log.b64":
                got.data += base64.b64decode(sse.data)
            elif sse.event == "end":
                got.end = json.loads(sse.data)
                return got
            elif sse.event == "lagged":
                got.lagged = json.loads(sse.data)
                return got
            if sse.id:
                got.last_id = sse.id
                got.arrivals.append((int(sse.id.rpartition(":")[2]), time.monotonic()))
            if stop_after_bytes is not None and len(got.data) >= stop_after_bytes:
                return got
    return got


async def watch_events(
    client: httpx.AsyncClient,
    url: str,
    *,
    last_id: str | None = None,
    stop_after: int | None = None,
) -> Watched:
    got = Watched()
    headers = {"Last-Event-ID": last_id} if last_id else {}
    async with aconnect_sse(client, "GET", url, headers=headers) as source:
        async for sse in source.aiter_sse():
            if sse.event in ("state", "progress"):
                got.events.append(json.loads(sse.data))
                got.last_id = sse.id
            elif sse.event == "end":
                got.end = json.loads(sse.data)
                return got
            elif sse.event == "lagged":
                got.lagged = json.loads(sse.data)
                return got
            if stop_after is not None and len(got.events) >= stop_after:
                return got
    return got
